"""States: one winner per subtask, every attempt final, errors bounded, allocations repaired."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from agents import FunctionAgent, LLMAgent
from budgetflow import arun, simulate
from orchestrator import (
    Allocation,
    Assignment,
    AttemptContext,
    AttemptStatus,
    Catalog,
    InProcessLedger,
    Outcome,
    PlanState,
    Workflow,
)
from orchestrator.ledger import usd_to_nano
from orchestrator.memory_recorder import MemoryRecorder
from tests.conftest import WorkflowFactory, estimate
from tests.promises.billing_provider import BillingProvider
from tests.promises.conftest import provider_model, wait_for_requests
from tests.promises.invariants import check_result


@pytest.mark.parametrize("policy", ["mcpp", "fixed:small:4", "split_uniform", "dual_mirror_descent"])
def test_simulated_runs_keep_every_promise(
    sim_catalog: Catalog, diamond: WorkflowFactory, policy: str
) -> None:
    """Runs that race many samples end with every attempt final and one winner per subtask."""
    outcomes = set()
    for seed in range(12 if policy == "mcpp" else 25):
        result = simulate(
            diamond(estimate(0.5, latency=2.0), estimate(0.9, 400, 4.0)),
            catalog=sim_catalog,
            inputs={"topic": "t"},
            budget_usd="0.02",
            deadline_s=20,
            policy=policy,
            seed=seed,
        )
        outcomes.add(result.outcome)
        check_result(result)
    assert Outcome.COMPLETED in outcomes


@pytest.mark.isolated
async def test_siblings_finishing_with_the_winner_are_final(provider: BillingProvider) -> None:
    """Four samples whose replies arrive in the same instant: one `passed`, the rest `passed_late`."""
    provider.configure(barrier=4, reply_tokens=5)
    catalog = Catalog.of(provider_model(provider))
    wf = Workflow("together", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="Answer {topic}"), models=["gpt"], max_tokens=20)
    result = await arun(
        wf, catalog=catalog, budget_usd="0.10", deadline_s=30, inputs={"topic": "t"}, policy="fixed:gpt:4"
    )
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    statuses = sorted(a.status.value for a in result.attempts)
    assert statuses.count("passed") == 1
    assert set(statuses) <= {"passed", "passed_late", "cancelled"}
    check_result(
        result,
        provider_log=provider.log(),
    )


async def _always_raises(ctx: AttemptContext) -> str:
    raise RuntimeError("this agent is broken")


@pytest.mark.parametrize("deadline_s", [10.0, None])
def test_an_agent_that_always_raises_fails_after_max_errors(
    sim_catalog: Catalog, deadline_s: float | None
) -> None:
    """On virtual time, with or without a deadline: no endless retries, a clear reason."""
    wf = Workflow("broken")
    wf.subtask("a", FunctionAgent(_always_raises), models=["small"], max_errors=3)
    result = simulate(
        wf, catalog=sim_catalog, budget_usd=1, deadline_s=deadline_s, policy="fixed:small:2", seed=0
    )
    assert result.outcome is Outcome.FAILED
    reason = result.run.reason or ""
    assert "3 batch(es)" in reason and "max_errors=3" in reason and "this agent is broken" in reason
    assert len(result.attempts) == 6
    assert {a.status for a in result.attempts} == {AttemptStatus.ERROR}


def test_a_prompt_that_cannot_render_fails_the_run_at_once(sim_catalog: Catalog) -> None:
    wf = Workflow("bad-format", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="{topic:d}"), models=["small"], estimates={"small": estimate(1.0)})
    result = simulate(
        wf,
        catalog=sim_catalog,
        inputs={"topic": "abc"},
        budget_usd=1,
        deadline_s=10,
        policy="always_cheapest",
    )
    assert result.outcome is Outcome.FAILED
    assert "`a`" in (result.run.reason or "") and result.attempts == []


class _Greedy:
    """Asks for more samples than the budget holds, and more output tokens than the ceiling."""

    name = "greedy"

    def decide(self, state: PlanState) -> Allocation:
        return Allocation(
            assignments={
                s: Assignment(model=state.dag.models[s][0], samples=16, max_tokens=712) for s in state.ready
            }
        )


def test_allocations_are_bounded_and_repaired(sim_catalog: Catalog) -> None:
    """3 x 16 samples asked with money for 7: 7 start; max_tokens never above the subtask's 150."""
    wf = Workflow("wide", inputs=["topic"])
    est = estimate(0.0, tokens=100, latency=5.0)  # never passes: every sample runs to its end
    for name in ("a", "b", "c"):
        wf.subtask(
            name,
            LLMAgent(prompt="{topic}"),
            models=["small"],
            estimates={"small": est},
            max_tokens=150,
            max_attempts=16,
        )
    spec = sim_catalog.get("small")
    hold = spec.hold_nano(input_tokens=8, max_tokens=150)  # "t" is 8 prompt tokens with the framing
    budget = Decimal(7 * hold + hold // 2) / 10**9
    result = simulate(
        wf,
        catalog=sim_catalog,
        inputs={"topic": "t"},
        budget_usd=budget,
        deadline_s=6,
        policy=_Greedy(),
        seed=0,
    )
    first = result.decisions[0]
    started = sum(a["samples"] for a in first.allocation.values())
    assert started == 7, first.allocation
    assert "repaired" in first.info
    assert all(a.max_tokens == 150 for a in result.attempts)
    check_result(result)


@pytest.mark.isolated
async def test_a_cancelled_run_settles_and_finalises_everything(provider: BillingProvider) -> None:
    provider.configure(reply_tokens=400, token_interval_s=0.05)
    catalog = Catalog.of(provider_model(provider))
    wf = Workflow("slow", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="Write {topic}"), models=["gpt"], max_tokens=1000)
    ledger = InProcessLedger(usd_to_nano("1"))
    cancel = asyncio.Event()

    async def press_ctrl_c() -> None:
        await wait_for_requests(provider, 1)
        await asyncio.sleep(0.3)
        cancel.set()

    pressing = asyncio.create_task(press_ctrl_c())
    result = await arun(
        wf,
        catalog=catalog,
        budget_usd="1",
        deadline_s=60,
        inputs={"topic": "t"},
        policy="fixed:gpt:3",
        ledger=ledger,
        cancel=cancel,
    )
    await pressing
    assert result.outcome is Outcome.CANCELLED
    assert (await ledger.snapshot()).reserved_nano == 0
    assert {a.status for a in result.attempts} == {AttemptStatus.CANCELLED}
    check_result(
        result,
        provider_log=provider.log(),
    )


@pytest.mark.isolated
async def test_cancelling_the_task_records_the_run_before_raising(provider: BillingProvider) -> None:
    provider.configure(reply_tokens=400, token_interval_s=0.05)
    catalog = Catalog.of(provider_model(provider))
    wf = Workflow("slow", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="Write {topic}"), models=["gpt"], max_tokens=1000)
    ledger = InProcessLedger(usd_to_nano("1"))
    memory = MemoryRecorder()
    task = asyncio.create_task(
        arun(
            wf,
            catalog=catalog,
            budget_usd="1",
            deadline_s=60,
            inputs={"topic": "t"},
            policy="fixed:gpt:2",
            ledger=ledger,
            recorder=memory,
        )
    )
    await wait_for_requests(provider, 1)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert memory.run is not None and memory.run.outcome is Outcome.CANCELLED
    assert (await ledger.snapshot()).reserved_nano == 0
    assert {a.status for a in memory.attempts.values()} == {AttemptStatus.CANCELLED}
