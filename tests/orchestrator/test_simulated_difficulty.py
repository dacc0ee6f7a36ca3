"""Per-input difficulty in the simulated backend, and what in-run updates make of it."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from agents import LLMAgent
from orchestrator import Outcome, RunResult, Workflow, simulate
from orchestrator.records import AttemptStatus
from orchestrator.simulated import SimulatedBackend
from policies.mcpp import MCPP
from policies.pacing import ThresholdRouter
from tests.conftest import estimate, simulated_catalog

TABLE = {("a", "small"): estimate(0.6), ("a", "large"): estimate(0.95), ("b", "small"): estimate(0.6)}


def _pass_rates(sigma: float, inputs: int = 400, tries: int = 10) -> np.ndarray:
    """Per input (seed): the share of `tries` attempts of (`a`, `small`) that passed."""
    rates = []
    for seed in range(inputs):
        backend = SimulatedBackend(TABLE, seed=seed, difficulty=sigma)
        rates.append(np.mean([backend.draw("a", "small", 10_000).success for _ in range(tries)]))
    return np.array(rates)


def test_difficulty_spreads_the_pass_rates_of_inputs_and_keeps_the_marginal() -> None:
    iid, hard = _pass_rates(0.0), _pass_rates(1.5)
    # i.i.d.: binomial spread only (0.6 x 0.4 / 10 = 0.024); with σ = 1.5, the inputs differ
    assert iid.var() == pytest.approx(0.024, abs=0.006)
    assert hard.var() > 2.5 * iid.var()
    assert abs(iid.mean() - 0.6) < 0.02
    assert abs(hard.mean() - 0.6) < 0.03


def test_one_input_is_as_hard_for_every_model_and_each_subtask_has_its_own() -> None:
    backend = SimulatedBackend(TABLE, seed=11, difficulty=1.0)
    again = SimulatedBackend(TABLE, seed=11, difficulty=1.0)
    assert backend.input_difficulty("a") == again.input_difficulty("a") != 0.0
    assert backend.input_difficulty("a") != backend.input_difficulty("b")
    # the harder the input, the lower every model's odds on it
    order = sorted((SimulatedBackend(TABLE, seed=s, difficulty=1.0) for s in range(40)), key=_z)
    easy, hard = order[0], order[-1]
    for model in ("small", "large"):
        assert _p(hard, model) < _p(easy, model)
    assert SimulatedBackend(TABLE, seed=11).input_difficulty("a") == 0.0


def _z(backend: SimulatedBackend) -> float:
    return backend.input_difficulty("a")


def _p(backend: SimulatedBackend, model: str) -> float:
    return float(np.mean([backend.draw("a", model, 10_000).success for _ in range(200)]))


def test_a_bad_difficulty_is_refused() -> None:
    with pytest.raises(ValueError, match="difficulty"):
        SimulatedBackend(TABLE, difficulty=-1.0)


def _diamond() -> Workflow:
    est = {"small": estimate(0.6), "large": estimate(0.95, 500, 6.0)}
    wf = Workflow("diamond", inputs=["topic"])
    a = wf.subtask("a", LLMAgent(prompt="Plan {topic}"), models=["small", "large"], estimates=est)
    b = wf.subtask("b", LLMAgent(prompt="Left of {a}"), models=["small", "large"], after=[a], estimates=est)
    c = wf.subtask("c", LLMAgent(prompt="Right of {a}"), models=["small", "large"], after=[a], estimates=est)
    wf.subtask("d", LLMAgent(prompt="{b} + {c}"), models=["small", "large"], after=[b, c], estimates=est)
    return wf


def test_without_difficulty_and_updates_a_seeded_run_is_what_it_was() -> None:
    """Pinned before difficulty and in-run updates existed: the defaults draw exactly as then."""
    result = simulate(
        _diamond(),
        catalog=simulated_catalog(),
        policy=MCPP(),
        budget_usd=0.05,
        deadline_s=60,
        seed=3,
        inputs={"topic": "t"},
        update_in_run=False,
    )
    assert result.outcome is Outcome.COMPLETED
    assert result.spent_usd == Decimal("0.0011199")
    assert result.makespan_s == pytest.approx(24.0554, abs=1e-4)
    assert [(a.subtask, a.status.value) for a in result.attempts] == [
        *[("a", "failed")] * 4,
        ("a", "passed"),
        ("b", "passed"),
        ("c", "failed"),
        ("c", "passed"),
        ("d", "passed"),
    ]
    assert {a.model for a in result.attempts} == {"small"}


# ---- escalation ---------------------------------------------------------------------------


def _chain() -> Workflow:
    est = {"small": estimate(0.6), "large": estimate(0.95, 500, 6.0)}
    wf = Workflow("chain")
    a = wf.subtask("a", LLMAgent(prompt="Plan"), models=["small", "large"], estimates=est)
    b = wf.subtask("b", LLMAgent(prompt="Do {a}"), models=["small", "large"], after=[a], estimates=est)
    wf.subtask("c", LLMAgent(prompt="Check {b}"), models=["small", "large"], after=[b], estimates=est)
    return wf


def failed_cheap_before_escalation(result: RunResult) -> int:
    """Failed `small` attempts of each subtask before its first `large` one (or its end)."""
    failed = 0
    for name in ("a", "b", "c"):
        for attempt in (a for a in result.attempts if a.subtask == name):
            if attempt.model == "large":
                break
            failed += attempt.status is AttemptStatus.FAILED
    return failed


def _escalation(update: bool, runs: int = 50) -> tuple[float, int]:
    """Mean failed cheap attempts before escalation and completed runs, over `runs` seeded inputs."""
    failed, completed = 0, 0
    for seed in range(runs):
        result = simulate(
            _chain(),
            catalog=simulated_catalog(),
            policy=ThresholdRouter(threshold=0.5),
            budget_usd=0.05,
            deadline_s=40,
            seed=seed,
            difficulty=1.5,
            update_in_run=update,
        )
        failed += failed_cheap_before_escalation(result)
        completed += result.outcome is Outcome.COMPLETED
    return failed / runs, completed


def test_in_run_updates_escalate_sooner_on_hard_inputs() -> None:
    """The router keeps the cheap model while its belief clears 0.5 (the prior says 0.6): with
    updates, a failure on a hard input takes it below and the next batch goes to `large`."""
    without, completed_without = _escalation(update=False)
    with_updates, completed_with = _escalation(update=True)
    print(f"failed cheap attempts before escalation: {without:.2f} without, {with_updates:.2f} with updates")
    assert with_updates < 0.5 * without
    assert without > 2.0  # hard inputs do fail the cheap model repeatedly
    assert completed_with >= completed_without
