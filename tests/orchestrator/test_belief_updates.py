"""In-run updates: a verdict moves the odds of its model and, less, of the others; nothing else does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import pytest

from agents import FunctionAgent, LLMAgent
from orchestrator import (
    AttemptContext,
    AttemptEstimate,
    AttemptOutput,
    ConfigError,
    InRunUpdate,
    ProviderError,
    RequestFeatures,
    RetryPolicy,
    RunResult,
    Workflow,
    arun,
    simulate,
)
from orchestrator._estimate_book import EstimateBook
from orchestrator.belief_updates import InRunBeliefs
from orchestrator.estimates import EmpiricalSample
from orchestrator.plan import PlanState
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from orchestrator.virtual_time import run_virtual
from policies.baselines import FixedModel
from policies.bench import StateCapture
from policies.problem import CompiledDag
from tests.conftest import estimate, simulated_catalog
from tests.policies.conftest import initial_state

RULE = InRunUpdate()
MODELS = {"s": ("small", "large")}


def _table() -> dict[tuple[str, str], AttemptEstimate]:
    return {("s", "small"): estimate(0.6), ("s", "large"): estimate(0.9, 500)}


def _observe(
    table: dict[tuple[str, str], AttemptEstimate],
    beliefs: InRunBeliefs,
    *,
    passed: bool | None,
    truncated_at: int | None = None,
) -> None:
    table.update(beliefs.observe(table, "s", "small", passed=passed, truncated_at=truncated_at))


def test_a_failure_lowers_its_model_more_than_the_others() -> None:
    table, beliefs = _table(), InRunBeliefs(RULE, MODELS)
    _observe(table, beliefs, passed=False)
    small, large = table[("s", "small")].success_prob, table[("s", "large")].success_prob
    k, rho = RULE.concentration, RULE.spillover
    assert small == pytest.approx(0.6 * k / (k + 1))
    assert large == pytest.approx(0.9 * k / (k + rho))
    assert 0.6 - small > 0.9 - large > 0


def test_a_pass_raises_them() -> None:
    table, beliefs = _table(), InRunBeliefs(RULE, MODELS)
    _observe(table, beliefs, passed=True)
    small, large = table[("s", "small")].success_prob, table[("s", "large")].success_prob
    assert small > 0.6 and large > 0.9
    assert small - 0.6 > large - 0.9


def test_errors_and_cancellations_change_nothing() -> None:
    table, beliefs = _table(), InRunBeliefs(RULE, MODELS)
    before = dict(table)
    assert beliefs.observe(table, "s", "small", passed=None) == {}
    assert table == before
    _observe(table, beliefs, passed=False)
    assert table[("s", "small")].success_prob == pytest.approx(0.6 * 4 / 5)  # from the run's start


def test_a_truncated_output_raises_the_output_tokens_not_the_failure_count() -> None:
    table, beliefs = _table(), InRunBeliefs(RULE, MODELS)
    _observe(table, beliefs, passed=False, truncated_at=400)
    small = table[("s", "small")]
    assert small.output_tokens.mean == pytest.approx(RULE.truncation_growth * 400)
    assert small.output_tokens.std / small.output_tokens.mean == pytest.approx(0.3)  # spread kept
    assert small.success_prob == 0.6, "the cap failed it, not the model"
    assert table[("s", "large")] == _table()[("s", "large")]
    _observe(table, beliefs, passed=True, truncated_at=400)
    assert table[("s", "small")].success_prob > 0.6, "a truncated pass is a pass"


def test_an_empirical_estimate_becomes_parametric_with_the_update() -> None:
    samples = [EmpiricalSample(success=j < 6, output_tokens=300 + j, latency_s=2.0) for j in range(10)]
    table = {("s", "small"): AttemptEstimate.from_samples(samples), ("s", "large"): estimate(0.9)}
    beliefs = InRunBeliefs(RULE, MODELS)
    table.update(beliefs.observe(table, "s", "small", passed=False))
    small = table[("s", "small")]
    assert small.samples == ()
    assert small.success_prob == pytest.approx(0.6 * 4 / 5)
    assert small.output_tokens.mean == pytest.approx(304.5)


@pytest.mark.parametrize(
    "bad", [{"concentration": 0.0}, {"spillover": 1.0}, {"spillover": -0.1}, {"truncation_growth": 1.0}]
)
def test_bad_constants_are_config_errors(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="in-run update"):
        InRunUpdate(**bad)


def test_mcpps_compiled_estimates_see_an_update() -> None:
    wf = Workflow("w")
    est = {"small": estimate(0.6), "large": estimate(0.9, 500)}
    wf.subtask("s", LLMAgent(prompt="x"), models=["small", "large"], estimates=est)
    state = initial_state(wf, simulated_catalog(), 1.0, None)
    book = CompiledDag(state)
    table = dict(state.estimates)
    table.update(InRunBeliefs(RULE, MODELS).observe(table, "s", "small", passed=False))
    assert book.refresh(replace(state, estimates=table)) == 1
    small = book.models.index("small")
    assert book.success_prob[0, small] < 0.55  # recompiled from the lowered belief


# ---- in a run -------------------------------------------------------------------------------


def _run(wf: Workflow, capture: StateCapture, **kw: object) -> RunResult:
    catalog = simulated_catalog()
    backend = SimulatedBackend(EstimateBook.build(wf, catalog).table, seed=0)
    return run_virtual(
        arun(
            wf,
            catalog=catalog,
            client=SimulatedClient(backend),
            policy=capture,
            budget_usd=1.0,
            retry=RetryPolicy(max_retries=0),
            **kw,  # type: ignore[arg-type]
        )
    )


def _verdicts(*passes: bool) -> FunctionAgent:
    """An agent whose n-th attempt passes (or fails) its check as `passes[n]` says."""
    it: Iterator[bool] = iter(passes)

    async def work(ctx: AttemptContext) -> AttemptOutput:
        return AttemptOutput(value="x", text="x", simulated_success=next(it))

    return FunctionAgent(work)


def _odds(state: PlanState, subtask: str) -> tuple[float, float]:
    return state.estimates[(subtask, "small")].success_prob, state.estimates[(subtask, "large")].success_prob


def _one_subtask(agent: FunctionAgent) -> Workflow:
    wf = Workflow("w")
    wf.subtask(
        "s", agent, models=["small", "large"], estimates={"small": estimate(0.6), "large": estimate(0.9)}
    )
    return wf


def test_a_failed_check_lowers_the_odds_the_policy_sees_next() -> None:
    capture = StateCapture(FixedModel(model="small"))
    result = _run(_one_subtask(_verdicts(False, True)), capture)
    assert result.outcome.value == "completed"
    assert _odds(capture.states[0], "s") == (0.6, 0.9)
    small, large = _odds(capture.states[1], "s")
    assert small == pytest.approx(RULE.success_prob(0.6, 0, 1))
    assert large == pytest.approx(RULE.success_prob(0.9, 0, RULE.spillover))
    recorded = result.decisions[1].info["in_run_beliefs"]["s"]
    assert recorded["small"]["failures"] == 1 and recorded["large"]["failures"] == RULE.spillover
    assert recorded["small"]["success_prob"] == round(small, 4)


def test_without_updates_the_odds_stay() -> None:
    capture = StateCapture(FixedModel(model="small"))
    result = _run(_one_subtask(_verdicts(False, True)), capture, update_in_run=False)
    assert [_odds(s, "s") for s in capture.states] == [(0.6, 0.9), (0.6, 0.9)]
    assert "in_run_beliefs" not in result.decisions[1].info


def test_a_provider_error_leaves_the_odds_unchanged() -> None:
    calls = iter([True, False])

    async def flaky(ctx: AttemptContext) -> AttemptOutput:
        if next(calls):
            raise ProviderError("provider down", retryable=False)
        return AttemptOutput(value="x", text="x", simulated_success=True)

    capture = StateCapture(FixedModel(model="small"))
    result = _run(_one_subtask(FunctionAgent(flaky)), capture)
    assert [a.status.value for a in result.attempts] == ["error", "passed"]
    assert [_odds(s, "s") for s in capture.states] == [(0.6, 0.9), (0.6, 0.9)]


def test_a_cancelled_sibling_leaves_the_odds_unchanged() -> None:
    started = iter([True, False])
    never = asyncio.Event()

    async def race(ctx: AttemptContext) -> AttemptOutput:
        if next(started):
            return AttemptOutput(value="x", text="x", simulated_success=True)
        await never.wait()  # cancelled when its sibling passes
        raise AssertionError("unreachable")

    wf = Workflow("w")
    est = {"small": estimate(0.6), "large": estimate(0.9)}
    first = wf.subtask("s", FunctionAgent(race), models=["small", "large"], estimates=est)
    wf.subtask("t", _verdicts(True), models=["small", "large"], after=[first], estimates=est)
    capture = StateCapture(FixedModel(model="small", samples=2))
    result = _run(wf, capture)
    assert sorted(a.status.value for a in result.attempts if a.subtask == "s") == ["cancelled", "passed"]
    # one pass only: the cancelled sample counted for nothing
    assert _odds(capture.states[1], "s") == pytest.approx(
        (RULE.success_prob(0.6, 1, 0), RULE.success_prob(0.9, RULE.spillover, 0))
    )


class _Believes:
    """Believes `s` on `small` writes 50 tokens; the backend (the truth) writes about 300."""

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        return estimate(0.9, 50, spread=0.05) if model == "small" else None


def test_a_truncated_output_raises_the_output_token_estimate() -> None:
    wf = Workflow("w")
    est = {"small": estimate(0.9, 300, spread=0.05), "large": estimate(0.9)}
    wf.subtask("s", LLMAgent(prompt="x"), models=["small", "large"], estimates=est, max_attempts=3)
    capture = StateCapture(FixedModel(model="small"))
    result = simulate(
        wf,
        catalog=simulated_catalog(),
        policy=capture,
        budget_usd=1.0,
        deadline_s=None,
        estimator=_Believes(),
        seed=0,
    )
    first, second = result.attempts[0], result.attempts[1]
    assert first.max_tokens is not None and first.max_tokens < 100
    truncated = [c for c in result.calls if c.attempt_id == first.attempt_id and c.finish_reason == "length"]
    assert truncated, "the first attempt stopped at its cap"
    believed = capture.states[1].estimates[("s", "small")].output_tokens.mean
    assert believed == pytest.approx(RULE.truncation_growth * first.max_tokens)
    assert second.max_tokens is not None and second.max_tokens > first.max_tokens, "the next cap is higher"
