"""Every policy answers bounded, feasible allocations: the shared rule, the reproduced bugs, a property."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetflow import simulate
from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate, EmpiricalSample, LogNormal, default_max_tokens
from orchestrator.plan import Assignment, DagView, InFlight, ModelPrice, PlanState
from orchestrator.records import Outcome
from policies import MCPP, MCPPConfig, make_policy, policy_names
from policies.feasibility import MAX_SAMPLES, allocation_holds_usd, default_cap, repair, samples_that_fit
from policies.pacing import DualMirrorDescent
from policies.rollout import RolloutPlan, compile_problem, run_rollouts, start_from_state
from tests.policies.conftest import WorkflowFactory, assert_feasible, initial_state, samples

_FORMS = ("fixed:a:1", "fixed:b:64", "sequential_4:a", "sequential_16:c")


def _all_policies() -> list[str]:
    return [*policy_names(), *_FORMS]


# ---- the shared rule ----------------------------------------------------------------------


def test_samples_that_fit_serves_samples_in_order() -> None:
    assert samples_that_fit(1.0, 0.3, 5) == 3
    assert samples_that_fit(0.9, 0.3, 3) == 3  # exactly full, despite float rounding
    assert samples_that_fit(0.2, 0.3, 4) == 0
    assert samples_that_fit(-1.0, 0.3, 4) == 0
    assert samples_that_fit(1.0, 0.0, 7) == 7
    assert samples_that_fit(np.array([1.0, 0.5]), np.array([0.3, 0.1]), np.array([2, 9])).tolist() == [2, 5]


def test_the_kernel_starts_as_many_samples_as_the_shared_rule(chain: WorkflowFactory) -> None:
    # every sample fails and nothing is retried, so spend / cost of one sample = samples started
    wf, cat = chain({"small": samples(0.0, 300, 3.0, n=1)}, {"small": "0.4"}, n=1)
    for budget, k in [(0.001, 64), (0.0004, 3), (0.00012, 1), (0.01, 16)]:
        state = initial_state(wf, cat, budget, None)
        prob = compile_problem(state)
        mt = int(prob.default_mt[0, 0])
        plan = RolloutPlan(
            rollout_id=np.zeros(1, dtype=np.int64),
            first_model=np.zeros((1, 1), dtype=np.int64),
            first_k=np.full((1, 1), k, dtype=np.int64),
            first_mt=np.full((1, 1), mt, dtype=np.int64),
            cont_model=np.zeros(1, dtype=np.int64),
            cont_k=np.zeros(1, dtype=np.int64),
        )
        res = run_rollouts(prob, start_from_state(prob, state), plan, seed=0)
        started = round(float(res.spent[0]) / (300 * 0.4e-6))
        assert started == samples_that_fit(budget, prob.hold(0, 0, mt), k), (budget, k)


def test_repair_lowers_samples_then_moves_to_a_cheaper_model(chain: WorkflowFactory) -> None:
    est = {"cheap": samples(0.5, 300, 3.0), "strong": samples(0.9, 300, 3.0)}
    wf, cat = chain(est, {"cheap": "0.4", "strong": "40"}, n=1)
    strong_hold = 40e-6 * default_max_tokens(est["strong"])
    state = initial_state(wf, cat, 2.5 * strong_hold, None)
    fewer = repair(state, {"s0": Assignment(model="strong", samples=5)})
    assert fewer["s0"].model == "strong" and fewer["s0"].samples == 2
    state = initial_state(wf, cat, 0.5 * strong_hold, None)
    cheaper = repair(state, {"s0": Assignment(model="strong", samples=5)})
    assert cheaper["s0"].model == "cheap" and cheaper["s0"].samples == 5
    state = initial_state(wf, cat, 1e-6, None)
    refused = repair(state, {"s0": Assignment(model="strong", samples=5)})
    assert refused == {
        "s0": Assignment(model="cheap", samples=1, max_tokens=default_cap(state, "s0", "cheap"))
    }


def test_widths_above_the_cap_are_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="between 1 and 64"):
        make_policy("fixed:small:100")
    with pytest.raises(ConfigError, match="between 1 and 64"):
        MCPPConfig(k_levels=(1, 128))
    with pytest.raises(ConfigError, match="between 1 and 64"):
        DualMirrorDescent(k_levels=(1, 65))


# ---- the reproduced bugs ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["split_uniform", "split_dirichlet"])
def test_budget_splits_launch_bounded_samples(chain: WorkflowFactory, policy: str) -> None:
    # $100 on two subtasks bought 12,613 attempts: a share divided by one attempt's expected cost
    wf, cat = chain({"small": samples(0.5, 300, 3.0)}, {"small": "0.4"}, n=2)
    state = initial_state(wf, cat, 100.0, None)
    assert_feasible(state, make_policy(policy, seed=1).decide(state))
    result = simulate(wf, catalog=cat, policy=policy, budget_usd=100, deadline_s=None, seed=0)
    assert sum(a["samples"] for d in result.decisions for a in d.allocation.values()) <= 2 * MAX_SAMPLES
    # and never more than the budget left can hold
    tight = initial_state(wf, cat, 0.002, None)
    alloc = make_policy(policy, seed=1).decide(tight)
    assert_feasible(tight, alloc)
    assert allocation_holds_usd(tight, alloc.assignments) <= 0.002


def test_mcpp_asks_only_for_samples_the_budget_can_hold(chain: WorkflowFactory) -> None:
    # k = 16 is what the deadline needs; the budget holds 7 samples at the default cap (9 at the
    # tighter one): it asked for 16, and the ledger refused the rest
    wf, cat = chain({"small": samples(0.25, 300, 10.0)}, {"small": "0.4"}, n=1)
    hold = 0.4e-6 * default_max_tokens(samples(0.25, 300, 10.0))
    state = initial_state(wf, cat, 7.5 * hold, 14.0)
    alloc = MCPP().decide(state)
    assert 7 <= alloc.assignments["s0"].samples <= 9
    assert_feasible(state, alloc)


def test_dual_mirror_descent_picks_what_fits_when_the_best_value_does_not(chain: WorkflowFactory) -> None:
    # `large`: expected cost 0.031 USD, hold 0.040; the budget (0.035) covers the expectation, not the
    # hold. Choosing by expected cost alone picked `large` x1, whose hold the ledger refused while
    # 16 samples of `small` fitted, and the run ended `budget_exhausted` having spent nothing.
    est = {"small": samples(0.025, 300, 3.0, n=40), "large": samples(0.9, 3000, 6.0)}
    wf, cat = chain(est, {"small": "0.4", "large": "10"}, n=1)
    state = initial_state(wf, cat, 0.035, None)
    alloc = DualMirrorDescent().decide(state)
    assert_feasible(state, alloc)
    assert alloc.assignments["s0"].model == "small"
    result = simulate(wf, catalog=cat, policy=DualMirrorDescent(), budget_usd=0.035, deadline_s=None, seed=0)
    assert result.outcome is not Outcome.BUDGET_EXHAUSTED or result.spent_usd > 0


def test_no_policy_raises_the_ceiling_and_mcpp_plans_with_it(chain: WorkflowFactory) -> None:
    # outputs of 300-490 tokens; the definition caps calls at 150, so every call is truncated
    wf, cat = chain({"small": samples(0.9, 300, 3.0)}, {"small": "0.4"}, n=2)
    state = dataclasses.replace(initial_state(wf, cat, 1.0, 60.0), max_tokens_ceiling={"s0": 150})
    for name in [*policy_names(), "fixed:small:4", "sequential_16:small"]:
        alloc = make_policy(name).decide(state)
        assert_feasible(state, alloc)
        assert alloc.assignments["s0"].max_tokens is not None and alloc.assignments["s0"].max_tokens <= 150
    alloc = MCPP().decide(state)
    assert alloc.info["est_success"] == 0.0  # its rollouts truncate at the ceiling too


# ---- the property, over random small problems ---------------------------------------------

_MODELS = ("a", "b", "c")


@st.composite
def _states(draw: st.DrawFn) -> PlanState:
    n = draw(st.integers(1, 6))
    names = tuple(f"t{i}" for i in range(n))
    parents = {
        s: tuple(sorted(draw(st.sets(st.sampled_from(names[:i]), max_size=2)))) if i else ()
        for i, s in enumerate(names)
    }
    models = {
        s: tuple(draw(st.lists(st.sampled_from(_MODELS), min_size=1, max_size=3, unique=True))) for s in names
    }
    prices = {
        m: ModelPrice(
            input_usd_per_token=draw(st.sampled_from([0.0, 1e-7, 1e-6])),
            output_usd_per_token=draw(st.sampled_from([1e-7, 4e-7, 1e-5, 6e-5])),
        )
        for m in _MODELS
    }
    estimates: dict[tuple[str, str], AttemptEstimate] = {}
    for s in names:
        for m in models[s]:
            p = draw(st.sampled_from([0.0, 0.2, 0.6, 0.95, 1.0]))
            tokens = draw(st.sampled_from([20, 300, 2000]))
            if draw(st.booleans()):
                estimates[(s, m)] = AttemptEstimate(
                    success_prob=p,
                    output_tokens=LogNormal(mean=tokens, std=tokens / 2),
                    latency_s=LogNormal(mean=3.0, std=1.0),
                    input_tokens=draw(st.sampled_from([0, 500])),
                )
            else:
                estimates[(s, m)] = AttemptEstimate.from_samples(
                    [
                        EmpiricalSample(
                            success=j < round(p * 6), output_tokens=tokens + 37 * j, latency_s=2.0 + j
                        )
                        for j in range(6)
                    ],
                    input_tokens=draw(st.sampled_from([0, 500])),
                )
    # a consistent moment of a run: a down-closed completed set, some ready, some running
    completed: set[str] = set()
    for s in names:
        if all(p in completed for p in parents[s]) and draw(st.booleans()) and len(completed) < n - 1:
            completed.add(s)
    frontier = [s for s in names if s not in completed and all(p in completed for p in parents[s])]
    running = [s for s in frontier if draw(st.integers(0, 3)) == 0]
    ready = tuple(s for s in frontier if s not in running) or tuple(frontier)
    running = [s for s in running if s not in ready]
    ceilings = {s: draw(st.sampled_from([10, 200, 5000])) for s in names if draw(st.booleans())}
    state = PlanState(
        dag=DagView(subtasks=names, parents=parents, models=models),
        completed=frozenset(completed),
        ready=ready,
        in_flight=(),
        budget_usd=0.0,
        spent_usd=0.0,
        reserved_usd=0.0,
        remaining_time_s=draw(st.sampled_from([None, 2.0, 30.0, 600.0])),
        elapsed_s=draw(st.sampled_from([0.0, 12.5])),
        estimates=estimates,
        prices=prices,
        attempts={s: draw(st.integers(0, 3)) for s in names if s not in ready or draw(st.booleans())},
        decision_index=draw(st.integers(0, 5)),
        max_tokens_ceiling=ceilings,
        time_budget_s=draw(st.sampled_from([None, 0.0005, 0.05])),
    )
    flights = []
    for s in running:
        m = models[s][0]
        flights.append(
            InFlight(
                subtask=s,
                model=m,
                samples=draw(st.integers(1, 4)),
                elapsed_s=draw(st.sampled_from([0.1, 4.0])),
                max_tokens=default_cap(state, s, m),
            )
        )
    reserved = sum(f.samples * state.reservation_usd(f.subtask, f.model, f.max_tokens) for f in flights)
    budget = draw(st.sampled_from([1e-6, 1e-4, 1e-3, 0.01, 0.1, 100.0])) + reserved
    spent = draw(st.sampled_from([0.0, 0.3])) * (budget - reserved)
    return dataclasses.replace(
        state, in_flight=tuple(flights), budget_usd=budget, spent_usd=spent, reserved_usd=reserved
    )


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(state=_states())
def test_every_policy_answers_bounded_feasible_allocations(state: PlanState) -> None:
    for name in _all_policies():
        policy = make_policy(name, seed=3)
        if name == "mcpp_full" and state.time_budget_s is None:
            state = dataclasses.replace(state, time_budget_s=0.05)  # full M on 6 subtasks is slow
        assert_feasible(state, policy.decide(state))
