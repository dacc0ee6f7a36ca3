"""The executor's rules: sibling cancellation, deadlines, budgets, retries, failures."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from agents import FunctionAgent, LLMAgent, checks
from budgetflow import arun, simulate
from orchestrator import (
    Allocation,
    Assignment,
    AttemptContext,
    AttemptStatus,
    CallKind,
    CallStatus,
    Catalog,
    InProcessLedger,
    LedgerSnapshot,
    Outcome,
    PlanState,
    Reservation,
    RetryPolicy,
    Workflow,
    WorkflowError,
)
from orchestrator.ledger import usd_to_nano
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from orchestrator.virtual_time import run_virtual
from policies.baselines import FixedModel
from tests.conftest import WorkflowFactory, estimate, step


def test_diamond_completes_and_tree_nests_calls(sim_catalog: Catalog, diamond: WorkflowFactory) -> None:
    result = simulate(
        diamond(),
        inputs={"topic": "t"},
        catalog=sim_catalog,
        policy="always_cheapest",
        budget_usd=1,
        deadline_s=600,
        seed=3,
    )
    assert result.outcome is Outcome.COMPLETED
    assert set(result.outputs) == {"a", "b", "c", "d"}
    assert 0 < result.spent_usd <= 1
    llm_calls = [c for c in result.calls if c.kind is CallKind.LLM]
    spans = {c.call_id for c in result.calls if c.kind is CallKind.AGENT}
    assert llm_calls and all(c.parent_call_id in spans for c in llm_calls)
    assert sum(c.cost_usd for c in llm_calls) == result.spent_usd
    walked = list(result.tree.walk())
    assert walked[0][0] == 0 and walked[1][0] == 1 and walked[2][0] == 2
    assert result.tree.cost_usd == result.spent_usd


def test_children_start_as_soon_as_their_own_parents_finish(sim_catalog: Catalog) -> None:
    """No superstep barrier: a fast branch's child starts before the slow branch ends."""
    wf = Workflow("branches")
    fast = step(wf, "fast", estimate(1.0, latency=1.0, spread=0))
    slow = step(wf, "slow", estimate(1.0, latency=20.0, spread=0))
    step(wf, "after_fast", estimate(1.0, latency=1.0, spread=0), prompt="{fast}", after=[fast])
    step(wf, "join", estimate(1.0, latency=1.0, spread=0), prompt="{slow}", after=[slow])
    result = simulate(wf, catalog=sim_catalog, policy="always_cheapest", budget_usd=1, deadline_s=100, seed=0)
    starts = {a.subtask: a.started_s for a in result.attempts}
    assert starts["after_fast"] == pytest.approx(1.0, abs=1e-6)
    assert starts["join"] == pytest.approx(20.0, abs=1e-6)
    assert result.makespan_s == pytest.approx(21.0, abs=1e-6)


def test_first_passing_sample_wins_and_siblings_are_cancelled(sim_catalog: Catalog) -> None:
    wf = Workflow("race")
    step(wf, "solve", estimate(1.0, 1000, 10.0, spread=0.5))
    result = simulate(
        wf,
        catalog=sim_catalog,
        policy=FixedModel(model="small", samples=8),
        budget_usd=1,
        deadline_s=100,
        seed=5,
    )
    assert result.outcome is Outcome.COMPLETED
    statuses = sorted(a.status for a in result.attempts)
    assert statuses.count(AttemptStatus.PASSED) == 1
    assert statuses.count(AttemptStatus.CANCELLED) == 7
    winner = next(a for a in result.attempts if a.status is AttemptStatus.PASSED)
    assert winner.ended_s is not None
    assert result.makespan_s == pytest.approx(winner.ended_s, abs=1e-9)
    cancelled = [c for c in result.calls if c.kind is CallKind.LLM and c.status is CallStatus.CANCELLED]
    assert len(cancelled) == 7
    for call in cancelled:
        # settled for what it generated before the winner ended, never more than reserved
        assert call.cost_usd < call.reserved_usd
        assert call.latency_s == pytest.approx(winner.ended_s - call.started_s, abs=1e-9)


def test_all_failed_batch_is_ready_again_and_max_attempts_fails_the_run(sim_catalog: Catalog) -> None:
    wf = Workflow("hopeless")
    step(wf, "solve", estimate(0.0), max_attempts=6)
    result = simulate(
        wf,
        catalog=sim_catalog,
        policy=FixedModel(model="small", samples=2),
        budget_usd=1,
        deadline_s=1000,
        seed=1,
    )
    assert result.outcome is Outcome.FAILED
    assert "failed all 6 attempts" in (result.run.reason or "")
    assert [a.batch for a in result.attempts] == [0, 0, 1, 1, 2, 2]
    assert len(result.decisions) == 3


def test_deadline_cancels_in_flight_calls_promptly(sim_catalog: Catalog) -> None:
    wf = Workflow("slow")
    step(wf, "solve", estimate(1.0, 500, latency=50.0, spread=0), model="large")
    result = simulate(
        wf,
        catalog=sim_catalog,
        policy=FixedModel(model="large", samples=3),
        budget_usd=1,
        deadline_s=10,
        seed=1,
    )
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    assert result.makespan_s == pytest.approx(10.0, abs=1e-6)
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert len(llm) == 3 and all(c.status is CallStatus.CANCELLED for c in llm), [
        (c.status, c.error, c.latency_s) for c in llm
    ]
    assert all(c.latency_s == pytest.approx(10.0, abs=1e-6) for c in llm)
    # pro-rata: 10 s of a 50 s call => a fifth of its output tokens
    assert all(c.output_tokens == 100 for c in llm)


async def test_deadline_on_a_real_clock_ends_within_a_small_bound(sim_catalog: Catalog) -> None:
    wf = Workflow("slow")
    step(wf, "solve", estimate(1.0, latency=30.0, spread=0))
    client = SimulatedClient(SimulatedBackend({("solve", "small"): estimate(1.0, latency=30.0, spread=0)}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await arun(
        wf, catalog=sim_catalog, budget_usd=1, deadline_s=0.3, policy="fixed:small:4", client=client
    )
    overshoot = loop.time() - started - 0.3
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    assert 0 <= overshoot < 0.25


def test_budget_is_never_exceeded_and_exhaustion_is_reported(sim_catalog: Catalog) -> None:
    wf = Workflow("pricey")
    wf.subtask("solve", LLMAgent(prompt="x"), models=["large"], estimates={"large": estimate(0.2, 1000, 2.0)})
    budget = Decimal("0.05")
    result = simulate(
        wf,
        catalog=sim_catalog,
        policy=FixedModel(model="large", samples=4),
        budget_usd=budget,
        deadline_s=1e6,
        seed=2,
    )
    assert result.outcome in (Outcome.BUDGET_EXHAUSTED, Outcome.COMPLETED)
    assert result.spent_usd <= budget
    if result.outcome is Outcome.BUDGET_EXHAUSTED:
        assert "left of the budget" in (result.run.reason or "")


@pytest.mark.parametrize("seed", range(12))
def test_ledger_invariant_holds_over_whole_runs(
    sim_catalog: Catalog, diamond: WorkflowFactory, seed: int
) -> None:
    """Many concurrent samples racing for a tight budget: spent + reserved never exceeds it."""
    budget = usd_to_nano("0.004")
    inner = InProcessLedger(budget)
    seen: list[int] = []

    class WatchedLedger:
        """Delegates to the real ledger and notes spent + reserved after every change."""

        async def reserve(self, amount_nano: int) -> Reservation | None:
            held = await inner.reserve(amount_nano)
            self._note()
            return held

        async def settle(self, reservation: Reservation, actual_nano: int) -> int:
            charged = await inner.settle(reservation, actual_nano)
            self._note()
            return charged

        async def snapshot(self) -> LedgerSnapshot:
            return await inner.snapshot()

        def _note(self) -> None:
            snap = inner.snapshot_now()
            seen.append(snap.spent_nano + snap.reserved_nano)

    ledger = WatchedLedger()
    wf = diamond()
    client = SimulatedClient(
        SimulatedBackend(
            {(s, m): e for s, sub in wf.subtasks.items() for m, e in sub.estimates.items()}, seed=seed
        )
    )
    result = run_virtual(
        arun(
            wf,
            catalog=sim_catalog,
            budget_usd="0.004",
            deadline_s=1e6,
            inputs={"topic": "t"},
            policy=FixedModel(model="small", samples=16),
            client=client,
            ledger=ledger,
            seed=seed,
        )
    )
    assert len(seen) > 20 and max(seen) <= budget
    final = inner.snapshot_now()
    assert final.reserved_nano == 0 and final.overrun_nano == 0
    assert final.spent_nano == usd_to_nano(result.spent_usd) <= budget


def test_retryable_provider_errors_are_retried_and_recorded(
    sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    result = simulate(
        diamond(),
        inputs={"topic": "t"},
        catalog=sim_catalog,
        policy="always_cheapest",
        budget_usd=1,
        deadline_s=1e5,
        seed=7,
        error_rate=0.4,
    )
    assert result.outcome is Outcome.COMPLETED
    failed = [c for c in result.calls if c.kind is CallKind.LLM and c.status is CallStatus.ERROR]
    retried = [c for c in result.calls if c.kind is CallKind.LLM and c.retry > 0]
    assert failed and retried
    assert all("503" in (c.error or "") for c in failed)


def test_an_agent_bug_fails_the_attempt_not_the_run(sim_catalog: Catalog) -> None:
    calls = {"n": 0}

    async def flaky(ctx: AttemptContext) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("boom")
        return "fine"

    wf = Workflow("flaky")
    wf.subtask("f", FunctionAgent(flaky), models=["small"], check=checks.regex("fine"))
    result = simulate(wf, catalog=sim_catalog, policy="always_cheapest", budget_usd=1, deadline_s=10)
    assert result.outcome is Outcome.COMPLETED
    first, second = result.attempts
    assert first.status is AttemptStatus.ERROR and "KeyError" in (first.check_detail or "")
    assert second.status is AttemptStatus.PASSED


def test_a_failing_check_makes_the_subtask_retry(sim_catalog: Catalog) -> None:
    answers = iter(["nope", "nope", "42"])

    async def guess(ctx: AttemptContext) -> str:
        return next(answers)

    wf = Workflow("guess")
    wf.subtask("g", FunctionAgent(guess), models=["small"], check=checks.regex(r"^\d+$"))
    result = simulate(wf, catalog=sim_catalog, policy="always_cheapest", budget_usd=1, deadline_s=10)
    assert result.outcome is Outcome.COMPLETED and result.outputs["g"] == "42"
    assert [a.status for a in result.attempts] == [
        AttemptStatus.FAILED,
        AttemptStatus.FAILED,
        AttemptStatus.PASSED,
    ]


def test_missing_template_input_is_caught_before_anything_runs(sim_catalog: Catalog) -> None:
    wf = Workflow("w")
    wf.subtask("a", LLMAgent(prompt="{topic}"), models=["small"], estimates={"small": estimate(1.0)})
    with pytest.raises(WorkflowError, match=r"`\{topic\}`.*pass `topic` as a run input"):
        simulate(wf, catalog=sim_catalog, policy="always_cheapest", budget_usd=1, deadline_s=10)


class _DeferEverything:
    """A policy that never starts anything (a bug the executor must report, not hang on)."""

    name = "defer-everything"

    def decide(self, state: PlanState) -> Allocation:
        return Allocation(
            assignments={s: Assignment(model=state.dag.models[s][0], samples=0) for s in state.ready}
        )


def test_policy_that_defers_everything_fails_clearly(sim_catalog: Catalog, diamond: WorkflowFactory) -> None:
    result = simulate(
        diamond(),
        inputs={"topic": "t"},
        catalog=sim_catalog,
        policy=_DeferEverything(),
        budget_usd=1,
        deadline_s=10,
    )
    assert result.outcome is Outcome.FAILED
    assert "started nothing" in (result.run.reason or "")


def test_same_seed_same_run(sim_catalog: Catalog, diamond: WorkflowFactory) -> None:
    runs = [
        simulate(
            diamond(),
            inputs={"topic": "t"},
            catalog=sim_catalog,
            policy="fixed:small:2",
            budget_usd=1,
            deadline_s=600,
            seed=11,
        )
        for _ in range(2)
    ]
    assert runs[0].spent_usd == runs[1].spent_usd
    assert runs[0].makespan_s == runs[1].makespan_s
    assert [a.status for a in runs[0].attempts] == [a.status for a in runs[1].attempts]


async def test_simulated_models_go_through_litellm_on_a_real_clock(
    sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    result = await arun(
        diamond(),
        catalog=sim_catalog,
        budget_usd=1,
        deadline_s=60,
        inputs={"topic": "x"},
        policy="always_cheapest",
        seed=4,
        sim_time_scale=0.01,
        retry=RetryPolicy(max_retries=1),
    )
    assert result.outcome is Outcome.COMPLETED
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert llm and all(c.simulated and c.provider == "budgetflow-sim" for c in llm)
    assert all(c.prompt and c.response and c.response.startswith("[simulated") for c in llm)
    assert result.run.simulated


def test_policy_is_asked_again_as_the_deadline_approaches(sim_catalog: Catalog) -> None:
    """A subtask deferred while another runs is reconsidered at the deadline checkpoints."""

    class DeferUntilHalfway:
        name = "defer_until_halfway"

        def decide(self, state: PlanState) -> Allocation:
            late = state.remaining_time_s is not None and state.elapsed_s >= 0.5 * 40
            return Allocation(
                assignments={
                    s: Assignment(model="small", samples=1) for s in state.ready if s == "first" or late
                }
            )

    wf = Workflow("deferred")
    step(wf, "first", estimate(1.0, latency=30.0, spread=0))
    step(wf, "later", estimate(1.0, latency=5.0, spread=0))
    result = simulate(wf, catalog=sim_catalog, policy=DeferUntilHalfway(), budget_usd=1, deadline_s=40)
    assert result.outcome is Outcome.COMPLETED
    starts = {a.subtask: a.started_s for a in result.attempts}
    assert starts["later"] == pytest.approx(20.0, abs=1e-6)
    assert [d.at_s for d in result.decisions][:2] == [pytest.approx(0.0), pytest.approx(20.0)]


async def test_cancelling_a_run_records_it_as_cancelled(sim_catalog: Catalog) -> None:
    from orchestrator import AttemptRecord, MemoryRecorder

    class StartedRecorder(MemoryRecorder):
        """Says when all three samples are running."""

        def __init__(self) -> None:
            super().__init__()
            self.all_started = asyncio.Event()

        async def attempt_started(self, attempt: AttemptRecord) -> None:
            await super().attempt_started(attempt)
            if len(self.attempts) == 3:
                self.all_started.set()

    est = estimate(1.0, latency=30.0, spread=0)
    wf = Workflow("cancel-me")
    wf.subtask("slow", LLMAgent(prompt="x"), models=["small"], estimates={"small": est})
    recorder = StartedRecorder()
    client = SimulatedClient(SimulatedBackend({("slow", "small"): est}))
    task = asyncio.create_task(
        arun(
            wf,
            catalog=sim_catalog,
            budget_usd=1,
            deadline_s=60,
            policy="fixed:small:3",
            client=client,
            recorder=recorder,
        )
    )
    await recorder.all_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.run is not None and recorder.run.outcome is Outcome.CANCELLED
    llm = [c for c in recorder.calls if c.kind is CallKind.LLM]
    assert len(llm) == 3 and all(c.status is CallStatus.CANCELLED for c in llm), [
        (c.status, c.error, c.latency_s) for c in llm
    ]
    assert recorder.subtasks["slow"].status.value == "cancelled"


async def _join(ctx: AttemptContext) -> str:
    return ctx.texts["a"] + "|" + ctx.texts["b"]


def test_a_function_subtask_needs_no_model_runs_once_and_costs_nothing(sim_catalog: Catalog) -> None:
    wf = Workflow("fn", inputs=["topic"])
    a = step(wf, "a", estimate(1.0), prompt="A {topic}")
    b = step(wf, "b", estimate(1.0), prompt="B {topic}")
    wf.subtask("join", FunctionAgent(_join), after=[a, b])
    result = simulate(
        wf, catalog=sim_catalog, inputs={"topic": "t"}, budget_usd=1, deadline_s=60, policy="mcpp", seed=0
    )
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    joins = [x for x in result.attempts if x.subtask == "join"]
    assert len(joins) == 1 and joins[0].spent_usd == 0
    assert result.outputs["join"].startswith("[simulated small output for `a`")
    assert [c for c in result.calls if c.subtask == "join" and c.kind is CallKind.LLM] == []


async def _calls_anyway(ctx: AttemptContext) -> str:
    reply = await ctx.chat([{"role": "user", "content": "hi"}])
    return reply.text


def test_a_function_subtask_without_models_may_not_call_one(sim_catalog: Catalog) -> None:
    wf = Workflow("fn")
    wf.subtask("f", FunctionAgent(_calls_anyway))
    result = simulate(wf, catalog=sim_catalog, budget_usd=1, deadline_s=60, policy="always_cheapest")
    assert result.outcome is Outcome.FAILED
    assert "lists no models, so its agent cannot call one" in (result.run.reason or "")


def test_an_llm_agent_must_list_models() -> None:
    with pytest.raises(WorkflowError, match="its agent calls a model, but `models` is empty"):
        Workflow("w").subtask("a", LLMAgent(prompt="x"))
