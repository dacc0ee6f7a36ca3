"""MCPP: deterministic under a seed, and right on cases where the answer is obvious."""

from __future__ import annotations

import dataclasses

from budgetflow import simulate
from orchestrator.plan import Allocation, Assignment
from orchestrator.records import Outcome
from policies.mcpp import MCPP, MCPPConfig, action_values
from tests.policies.conftest import WorkflowFactory, initial_state, samples


def test_decisions_are_deterministic_under_a_seed(chain: WorkflowFactory) -> None:
    est = {"small": samples(0.6, 300, 3.0), "large": samples(0.9, 600, 6.0)}
    wf, cat = chain(est, {"small": "0.4", "large": "10"}, n=4)
    state = initial_state(wf, cat, 0.02, 40.0)
    a = MCPP(config=MCPPConfig(seed=1)).decide(state)
    b = MCPP(config=MCPPConfig(seed=1)).decide(state)
    assert a == b
    assert set(a.info) >= {"candidates", "rollouts", "est_success", "est_success_runner_up", "continuation"}
    runs = [
        simulate(
            wf, catalog=cat, policy=MCPP(config=MCPPConfig(seed=1)), budget_usd=0.02, deadline_s=40, seed=5
        )
        for _ in range(2)
    ]
    assert [d.allocation for d in runs[0].decisions] == [d.allocation for d in runs[1].decisions]


def test_cheap_model_that_always_succeeds_is_chosen(chain: WorkflowFactory) -> None:
    est = {"cheap": samples(1.0, 300, 3.0), "strong": samples(1.0, 300, 3.0)}
    wf, cat = chain(est, {"cheap": "0.1", "strong": "20"}, n=1)
    alloc = MCPP(config=MCPPConfig(racing=False, rollouts=16)).decide(initial_state(wf, cat, 1.0, 60.0))
    assert alloc.assignments["s0"].model == "cheap"
    assert alloc.assignments["s0"].samples == 1
    assert alloc.info["est_success"] == 1.0


def test_deadline_only_parallel_samples_can_meet(chain: WorkflowFactory) -> None:
    est = {"small": samples(0.25, 300, 10.0)}
    wf, cat = chain(est, {"small": "0.4"}, n=1)
    alloc = MCPP().decide(initial_state(wf, cat, 1.0, 14.0))
    assert alloc.assignments["s0"].samples >= 4  # k = 1 completes 25% of the time, k = 16 nearly always
    result = simulate(wf, catalog=cat, policy=MCPP(), budget_usd=1.0, deadline_s=14.0, seed=0)
    assert result.outcome is Outcome.COMPLETED


def test_budget_only_the_cheap_model_fits(chain: WorkflowFactory) -> None:
    est = {"cheap": samples(0.7, 300, 3.0), "strong": samples(0.95, 300, 3.0)}
    wf, cat = chain(est, {"cheap": "0.4", "strong": "40"}, n=2)
    # one `strong` attempt holds ~0.0155 USD: more than the whole budget
    alloc = MCPP().decide(initial_state(wf, cat, 0.003, None))
    assert alloc.assignments["s0"].model == "cheap"


def test_racing_spends_fewer_rollouts_than_full(chain: WorkflowFactory) -> None:
    est = {"small": samples(0.6, 300, 3.0), "large": samples(0.9, 600, 6.0)}
    wf, cat = chain(est, {"small": "0.4", "large": "10"}, n=4)
    state = dataclasses.replace(
        initial_state(wf, cat, 0.02, 40.0), completed=frozenset({"s0"}), ready=("s1", "s2")
    )
    raced = MCPP().decide(state)
    full = MCPP(config=MCPPConfig(racing=False)).decide(state)
    assert raced.info["rollouts"] < full.info["rollouts"] / 10


def test_action_values_score_an_action_by_its_best_continuation(chain: WorkflowFactory) -> None:
    # One subtask, 25% success per attempt, 8-12 s per attempt, 14 s left: no time for a retry,
    # so one sample completes 25% of the time and sixteen 1 - 0.75^16 = 99% of the time.
    wf, cat = chain({"small": samples(0.25, 300, 10.0)}, {"small": "0.4"}, n=1)
    state = initial_state(wf, cat, 1.0, 14.0)
    one, sixteen = (Allocation(assignments={"s0": Assignment(model="small", samples=k)}) for k in (1, 16))
    values = action_values(state, [one, sixteen, one], rollouts=4000, seed=3)
    assert abs(values[0] - 0.25) < 0.03
    assert values[1] > 0.97
    assert values[2] == values[0]  # the same action on the same rollout ids: the same value
    assert values == action_values(state, [one, sixteen, one], rollouts=4000, seed=3)


def test_racing_chooses_as_well_as_full_m_on_a_mixed_action(chain: WorkflowFactory) -> None:
    # Diamond after s0: s1 and s2 ready together under a tight budget, where the best actions
    # give them different widths (e.g. 16 and 4 samples) and values are well below 1.
    est = {"small": samples(0.5, 300, 4.0), "large": samples(0.9, 600, 6.0)}
    wf, cat = chain(est, {"small": "0.4", "large": "10"}, n=4)
    for budget, deadline in [(0.004, 9.0), (0.01, 8.0)]:
        state = dataclasses.replace(
            initial_state(wf, cat, budget, deadline), completed=frozenset({"s0"}), ready=("s1", "s2")
        )
        for seed in range(3):
            raced = MCPP(config=MCPPConfig(seed=seed)).decide(state)
            full = MCPP(config=MCPPConfig(seed=seed, racing=False)).decide(state)
            raced_value, full_value = action_values(state, [raced, full], rollouts=4000, seed=11)
            assert full_value > 0.5
            assert raced_value >= full_value - 0.01, (budget, deadline, seed, raced, full)
