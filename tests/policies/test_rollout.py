"""The compiled rollout kernel: agrees with the executor, deterministic, conditions in-flight work."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

from budgetflow import simulate
from orchestrator.plan import InFlight
from orchestrator.records import Outcome
from policies.baselines import FixedModel
from policies.rollout import (
    BUDGET_EXHAUSTED,
    COMPLETED,
    DEADLINE_EXCEEDED,
    FAILED,
    MAX_SAMPLES_PER_SUBTASK,
    RolloutPlan,
    compile_problem,
    run_rollouts,
    start_from_state,
    uniform_hash,
)
from tests.policies.conftest import WorkflowFactory, initial_state, samples


def _fixed_plan(
    prob_models: tuple[str, ...], model: str, k: int, n_sub: int, r: int, mt: np.ndarray
) -> RolloutPlan:
    m = prob_models.index(model)
    return RolloutPlan(
        rollout_id=np.arange(r, dtype=np.int64),
        first_model=np.full((r, n_sub), m, dtype=np.int64),
        first_k=np.full((r, n_sub), k, dtype=np.int64),
        first_mt=np.tile(mt, (r, 1)),
        cont_model=np.full(r, m, dtype=np.int64),
        cont_k=np.full(r, k, dtype=np.int64),
    )


@pytest.mark.parametrize(
    ("k", "budget", "deadline", "n_sub"),
    [(1, 1.0, 16.0, 3), (2, 1.0, 9.0, 4), (1, 0.0009, None, 3), (3, 0.0016, 20.0, 4), (4, 0.0012, None, 4)],
)
def test_kernel_matches_executor_completion(
    chain: WorkflowFactory, k: int, budget: float, deadline: float | None, n_sub: int
) -> None:
    est = {"small": samples(0.6, 300, 3.0), "large": samples(0.95, 600, 6.0)}
    wf, cat = chain(est, {"small": "0.4", "large": "10"}, n=n_sub)
    trials = 300
    wins = sum(
        simulate(
            wf,
            catalog=cat,
            policy=FixedModel(model="small", samples=k),
            budget_usd=budget,
            deadline_s=deadline,
            seed=seed,
        ).outcome
        is Outcome.COMPLETED
        for seed in range(trials)
    )
    state = initial_state(wf, cat, budget, deadline)
    prob = compile_problem(state)
    r = 20_000
    plan = _fixed_plan(prob.models, "small", k, prob.n, r, prob.default_mt[:, prob.models.index("small")])
    res = run_rollouts(prob, start_from_state(prob, state), plan, seed=7)
    p1, p2 = wins / trials, float(res.completed.mean())
    pooled = (wins + res.completed.sum()) / (trials + r)
    bound = 2.576 * math.sqrt(max(pooled * (1 - pooled), 1e-4) * (1 / trials + 1 / r))
    print(f"executor {p1:.3f} kernel {p2:.3f} bound {bound:.3f}")
    assert abs(p1 - p2) <= bound + 0.01, (p1, p2, bound)
    assert 0.0 <= res.spent.max() <= budget + 1e-12


def test_kernel_is_deterministic_and_uses_common_random_numbers(chain: WorkflowFactory) -> None:
    est = {"small": samples(0.5, 300, 3.0), "large": samples(0.9, 600, 6.0)}
    wf, cat = chain(est, {"small": "0.4", "large": "10"})
    state = initial_state(wf, cat, 1.0, 30.0)
    prob = compile_problem(state)
    start = start_from_state(prob, state)
    plan = _fixed_plan(prob.models, "small", 1, prob.n, 500, prob.default_mt[:, prob.models.index("small")])
    a = run_rollouts(prob, start, plan, seed=3)
    b = run_rollouts(prob, start, plan, seed=3)
    assert np.array_equal(a.outcome, b.outcome) and np.array_equal(a.spent, b.spent)
    # the same rollout id sees the same luck wherever it sits in the batch
    half = RolloutPlan(
        rollout_id=plan.rollout_id[::-1].copy(),
        first_model=plan.first_model,
        first_k=plan.first_k,
        first_mt=plan.first_mt,
        cont_model=plan.cont_model,
        cont_k=plan.cont_k,
    )
    c = run_rollouts(prob, start, half, seed=3)
    assert np.array_equal(c.spent[::-1], a.spent)


def test_uniform_hash_is_uniform_and_pure() -> None:
    a = np.arange(100_000, dtype=np.int64)
    u = uniform_hash(5, a, np.zeros_like(a), np.ones_like(a))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01
    assert np.array_equal(u, uniform_hash(5, a, np.zeros_like(a), np.ones_like(a)))
    assert not np.array_equal(u, uniform_hash(6, a, np.zeros_like(a), np.ones_like(a)))


def test_compiled_hash_is_the_documented_one() -> None:
    from policies import _kernel

    a = np.arange(50, dtype=np.int64)
    ref = uniform_hash(11, a, a * 3 + 7, a + 1000)
    got = np.array([_kernel.uniform(np.uint64(11), int(x), int(x) * 3 + 7, int(x) + 1000) for x in a])
    assert np.array_equal(ref, got)


def test_in_flight_samples_are_redrawn_given_still_running(chain: WorkflowFactory) -> None:
    # latencies 2.4 .. 3.54 s (row j: 3 x (0.8 + 0.02 j)), rows j < 12 pass; after 2.6 s only
    # rows 4..19 can still be running, and half of them (4..11) pass
    wf, cat = chain({"small": samples(0.6, 300, 3.0)}, {"small": "0.4"}, n=1)
    state = initial_state(wf, cat, 1.0, None)
    prob = compile_problem(state)
    mt = int(prob.default_mt[0, 0])
    hold = prob.hold(0, 0, mt)
    running = dataclasses.replace(
        state,
        ready=(),
        in_flight=(InFlight(subtask="s0", model="small", samples=1, elapsed_s=2.6, max_tokens=mt),),
        budget_usd=hold,  # nothing else fits: a failure ends the rollout `budget_exhausted`
        reserved_usd=hold,
        attempts={"s0": 1},
    )
    start = start_from_state(prob, running)
    assert sorted(start.flight_rows.tolist()) == list(range(4, 20))
    plan = _fixed_plan(prob.models, "small", 1, prob.n, 20_000, prob.default_mt[:, 0])
    res = run_rollouts(prob, start, plan, seed=1)
    assert set(res.outcome.tolist()) == {COMPLETED, BUDGET_EXHAUSTED}
    assert abs(res.completed.mean() - 0.5) < 0.02
    assert res.makespan.max() <= 3.54 - 2.6 + 1e-9 and res.makespan.min() > 0
    assert res.spent.max() <= hold + 1e-12


def test_import_policies_does_not_import_numba() -> None:
    code = "import sys, policies; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_subtask_deadline_ends_rollouts_that_finish_it_late(chain: WorkflowFactory) -> None:
    # a chain of two 2.4-3.5 s attempts that always pass: done by ~7 s; s0 alone must be done by 2 s
    wf, cat = chain({"small": samples(1.0, 300, 3.0)}, {"small": "0.4"}, n=2)
    state = initial_state(wf, cat, 1.0, 60.0)
    prob = compile_problem(state)
    start = start_from_state(prob, state)
    plan = _fixed_plan(prob.models, "small", 1, prob.n, 200, prob.default_mt[:, 0])
    free = run_rollouts(prob, start, plan, seed=2)
    assert free.completed.all()
    tight = dataclasses.replace(start, subtask_deadline=np.array([2.0, 60.0]))
    late = run_rollouts(prob, tight, plan, seed=2)
    assert (late.outcome == DEADLINE_EXCEEDED).all() and np.allclose(late.makespan, 2.0)
    roomy = dataclasses.replace(start, subtask_deadline=np.array([4.0, 60.0]))
    assert run_rollouts(prob, roomy, plan, seed=2).completed.all()


def test_a_subtask_that_never_passes_cannot_make_a_rollout_endless(chain: WorkflowFactory) -> None:
    # never passes, a $1,000 budget, no deadline: retried until the per-rollout sample cap
    wf, cat = chain({"small": samples(0.0, 300, 3.0)}, {"small": "0.4"}, n=1)
    state = initial_state(wf, cat, 1000.0, None)
    prob = compile_problem(state)
    plan = _fixed_plan(prob.models, "small", 64, prob.n, 20, prob.default_mt[:, 0])
    res = run_rollouts(prob, start_from_state(prob, state), plan, seed=0)
    assert (res.outcome == FAILED).all() and res.played == 20
    assert res.spent.max() <= (MAX_SAMPLES_PER_SUBTASK + 64) * 490 * 0.4e-6


def test_a_work_limit_stops_the_call_and_says_how_far_it_got(chain: WorkflowFactory) -> None:
    est = {"small": samples(0.5, 300, 3.0), "large": samples(0.9, 600, 6.0)}
    wf, cat = chain(est, {"small": "0.4", "large": "10"}, n=4)
    state = initial_state(wf, cat, 1.0, 30.0)
    prob = compile_problem(state)
    start = start_from_state(prob, state)
    plan = _fixed_plan(prob.models, "small", 4, prob.n, 1000, prob.default_mt[:, 0])
    whole = run_rollouts(prob, start, plan, seed=3)
    cut = run_rollouts(prob, start, plan, seed=3, work_limit=whole.work // 3)
    assert whole.played == 1000 and 0 < cut.played < 1000 and cut.work <= whole.work // 3 + 4 * prob.n + 64
    assert np.array_equal(cut.outcome[: cut.played], whole.outcome[: cut.played])
