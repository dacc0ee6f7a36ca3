"""MCPP on big DAGs: the horizon, the summary of the rest, changing estimates, the time budget."""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np
import pytest

from budgetflow import simulate
from orchestrator.estimates import AttemptEstimate, LogNormal
from orchestrator.plan import PlanState
from policies import MCPP, MCPPConfig, pool_workflow
from policies._horizon import decision_view
from policies.baselines import FixedModel
from policies.bench import StateCapture
from policies.problem import CompiledDag, compile_problem
from policies.synthetic import layered_limits, layered_problem
from tests.policies.conftest import WorkflowFactory, assert_feasible, initial_state, samples


@functools.cache
def _visited(subtasks: int, seed: int = 0) -> tuple[PlanState, ...]:
    """States a run of `subtasks` layered subtasks visits (two samples of the cheap model each)."""
    problem = layered_problem(subtasks, seed=seed)
    workflow, catalog = pool_workflow(problem)
    budget, deadline = layered_limits(problem, budget_factor=2.0, deadline_factor=1.5)
    capture = StateCapture(FixedModel(model="4B_ins", samples=2))
    simulate(workflow, catalog=catalog, policy=capture, budget_usd=budget, deadline_s=deadline, seed=seed)
    return tuple(capture.states)


def _spread(states: tuple[PlanState, ...], k: int) -> list[PlanState]:
    return [states[i] for i in np.linspace(0, len(states) - 1, k).astype(int)]


def test_a_dag_within_the_horizon_is_planned_whole() -> None:
    for state in _spread(_visited(24), 4):
        with_horizon = MCPP(config=MCPPConfig(seed=2)).decide(state)
        without = MCPP(config=MCPPConfig(seed=2, horizon=None)).decide(state)
        assert with_horizon == without
        assert "planned" not in with_horizon.info


def test_the_horizon_is_closed_bounded_and_leaves_time_and_money_for_the_rest() -> None:
    for state in _spread(_visited(300), 12):
        book = CompiledDag(state)
        view = decision_view(book, state, 32)
        prob = view.problem
        assert not view.whole and prob.n <= 32
        assert set(view.ready) | set(view.overflow) == set(state.ready)
        for s in prob.subtasks:  # every unfinished parent of a planned subtask is planned
            assert all(p in state.completed or p in prob for p in state.dag.parents[s])
        assert view.start.subtask_deadline is not None
        assert (view.start.subtask_deadline <= view.start.deadline).all()
        left = state.budget_usd - state.spent_usd - state.reserved_usd
        usable = (
            view.start.budget
            - state.spent_usd
            - sum(k * prob.hold(i, m, mt) for i, m, k, _, mt in view.start.in_flight)
        )
        assert 0 < view.budget_share <= 1 and usable <= left * view.budget_share + 1e-9
        running = {f.subtask for f in state.in_flight}
        unfinished = set(state.dag.subtasks) - set(state.completed)
        assert view.tail == len(unfinished - set(prob.subtasks) - running)


def test_a_large_dag_decision_is_bounded() -> None:
    # 2,000 subtasks: every decision used to play the whole DAG (15.7 s median)
    states = _spread(_visited(2000), 6)
    policy = MCPP()
    horizon = policy.config.horizon
    assert horizon is not None
    policy.decide(states[0])  # compiles the estimates once per run
    for state in states[1:]:
        t = time.thread_time()
        alloc = policy.decide(state)
        cpu = time.thread_time() - t
        assert alloc.info["planned"] <= horizon
        assert cpu < 1.0, cpu
        assert_feasible(state, alloc)


def test_ready_subtasks_beyond_the_horizon_get_their_cheap_plan() -> None:
    # with a horizon of 3 and at least 5 ready: 3 planned in detail, the others one cheap sample each
    state = next(s for s in _visited(300) if len(s.ready) >= 5 and not s.in_flight)
    wide = dataclasses.replace(state, budget_usd=state.budget_usd * 10)
    alloc = MCPP(config=MCPPConfig(horizon=3)).decide(wide)
    view = decision_view(CompiledDag(wide), wide, 3)
    assert len(view.ready) <= 3 and view.overflow
    for s in view.overflow:
        assert alloc.assignments[s].samples == 1
    assert_feasible(wide, alloc)


def test_estimates_replaced_during_a_run_are_compiled_again_and_only_they() -> None:
    state = _visited(300)[20]
    estimates = dict(state.estimates)
    state = dataclasses.replace(state, estimates=estimates)
    book = CompiledDag(state)
    compiled = book.compiled
    assert book.refresh(state) == 0 and book.compiled == compiled
    s = state.ready[0]
    m = state.dag.models[s][0]
    estimates[(s, m)] = AttemptEstimate(
        success_prob=0.0, output_tokens=LogNormal(mean=100.0), latency_s=LogNormal(mean=1.0), input_tokens=0
    )
    assert book.refresh(state) == 1 and book.compiled == compiled + 1
    i = book.position[s]
    assert book.success_prob[i, book.models.index(m)] == 0.0
    assert book.cheap_model[i] != book.models.index(m)


def test_mcpp_sees_an_estimate_replaced_in_the_same_mapping() -> None:
    # the mapping object stays the same (the executor replaces entries): decisions must follow
    state = _visited(24)[0]
    estimates = dict(state.estimates)
    state = dataclasses.replace(state, estimates=estimates)
    policy = MCPP(config=MCPPConfig(seed=4))
    first = policy.decide(state)
    for key in list(estimates):
        if key[0] in state.ready:
            estimates[key] = AttemptEstimate(
                success_prob=0.0,
                output_tokens=LogNormal(mean=100.0),
                latency_s=LogNormal(mean=1.0),
                input_tokens=0,
            )
    hopeless = policy.decide(state)
    assert first.info["est_success"] > 0 and hopeless.info["est_success"] == 0.0
    assert hopeless == MCPP(config=MCPPConfig(seed=4)).decide(state)  # as if compiled afresh


def test_a_tiny_time_budget_answers_at_once_with_a_valid_allocation() -> None:
    states = _spread(_visited(300), 4)
    policy = MCPP()
    policy.decide(states[0])
    for state in states:
        tiny = dataclasses.replace(state, time_budget_s=1e-4)
        t = time.perf_counter()
        alloc = policy.decide(tiny)
        assert time.perf_counter() - t < 0.25
        assert alloc.info["fallback"] == "time_budget" and alloc.info["rollouts"] == 0
        assert alloc.assignments and all(s in state.ready for s in alloc.assignments)
        assert_feasible(tiny, alloc)


def test_a_short_time_budget_stops_racing_early() -> None:
    state = _spread(_visited(300), 5)[2]
    policy = MCPP()
    unlimited = policy.decide(state)
    short = policy.decide(dataclasses.replace(state, time_budget_s=0.004))
    assert short.info["rollouts"] < unlimited.info["rollouts"]
    assert_feasible(state, short)


@pytest.mark.parametrize("n", [24, 300])
def test_tight_caps_are_the_90th_percentile_under_the_default(n: int) -> None:
    state = _visited(n)[0]
    prob = compile_problem(state)
    for i, m in zip(*np.nonzero(prob.allowed), strict=True):
        tok = prob.t_tokens[prob.rows(int(i), int(m))]
        expect = max(16, int(np.quantile(tok, 0.9, method="higher")))
        assert prob.tight_mt[i, m] == min(expect, prob.default_mt[i, m])


def test_initial_state_helper_and_synthetic_problems_are_deterministic() -> None:
    a, b = layered_problem(50, seed=3), layered_problem(50, seed=3)
    assert a == b and layered_problem(50, seed=4) != a
    wf, cat = pool_workflow(a)
    assert len(initial_state(wf, cat, 1.0, None).ready) >= 1


def test_the_time_budget_holds_when_rollouts_are_long(chain: WorkflowFactory) -> None:
    # nothing ever passes, the budget is huge and there is no deadline: every rollout retries
    # until its sample cap, so rollouts cost ~100x what a first guess says; the kernel stops on time
    wf, cat = chain(
        {"small": samples(0.0, 300, 3.0), "large": samples(0.0, 600, 6.0)},
        {"small": "0.4", "large": "10"},
        n=4,
    )
    state = dataclasses.replace(initial_state(wf, cat, 1000.0, None), time_budget_s=0.05)
    policy = MCPP()
    policy.decide(dataclasses.replace(state, time_budget_s=1e-4))  # compiles the estimates
    t = time.perf_counter()
    alloc = policy.decide(state)
    assert time.perf_counter() - t < 0.3
    assert_feasible(state, alloc)
