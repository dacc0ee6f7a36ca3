"""The direct router: cheap when the cheap model clears the threshold, else strong; strong after a failure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from budgetflow import simulate
from orchestrator.errors import ConfigError
from orchestrator.records import Outcome
from policies import DirectRouter, make_policy
from tests.policies.conftest import WorkflowFactory, initial_state, samples


@pytest.mark.parametrize(("cheap_p", "expected"), [(0.75, "tiny"), (0.65, "big")])
def test_a_first_attempt_goes_cheap_only_when_the_cheap_model_clears_the_threshold(
    chain: WorkflowFactory, cheap_p: float, expected: str
) -> None:
    est = {"tiny": samples(cheap_p, 300, 3.0), "mid": samples(0.8, 300, 3.0), "big": samples(0.95, 300, 3.0)}
    wf, cat = chain(est, {"tiny": "0.1", "mid": "1", "big": "10"}, n=1)
    alloc = DirectRouter(threshold=0.7).decide(initial_state(wf, cat, 1.0, None))
    # never the middle model: the router chooses between the cheapest and the dearest only
    assert alloc.assignments["s0"].model == expected
    assert alloc.assignments["s0"].samples == 1


def test_a_subtask_ready_again_after_a_failure_escalates_to_the_strong_model(chain: WorkflowFactory) -> None:
    est = {"tiny": samples(0.9, 300, 3.0), "big": samples(0.95, 300, 3.0)}
    wf, cat = chain(est, {"tiny": "0.1", "big": "10"}, n=1)
    state = initial_state(wf, cat, 1.0, None)
    assert DirectRouter().decide(state).assignments["s0"].model == "tiny"
    retried = DirectRouter().decide(replace(state, attempts={"s0": 1}))
    assert retried.assignments["s0"].model == "big"
    assert retried.info["routes"] == {"s0": "escalated"}


def test_the_strong_model_falls_back_to_what_the_budget_left_holds(chain: WorkflowFactory) -> None:
    est = {"tiny": samples(0.2, 300, 3.0), "big": samples(0.95, 300, 3.0)}
    wf, cat = chain(est, {"tiny": "0.1", "big": "10"}, n=1)
    # one big hold is ~0.006 $ (a ~610-token cap at $10/Mtok); tiny's is ~6e-5 $
    alloc = DirectRouter().decide(initial_state(wf, cat, 0.001, None))
    assert alloc.assignments["s0"].model == "tiny"


def test_in_a_run_it_escalates_once_the_cheap_model_failed(chain: WorkflowFactory) -> None:
    est = {"tiny": samples(0.75, 300, 3.0), "big": samples(1.0, 300, 3.0)}
    wf, cat = chain(est, {"tiny": "0.1", "big": "10"}, n=3)
    escalated = 0
    for seed in range(6):
        result = simulate(wf, catalog=cat, policy=DirectRouter(), budget_usd=1.0, deadline_s=None, seed=seed)
        assert result.outcome is Outcome.COMPLETED
        for s in ("s0", "s1", "s2"):
            models = [a.model for a in result.attempts if a.subtask == s]
            assert models[0] == "tiny"
            assert all(m == "big" for m in models[1:])
            assert len(models) <= 2  # big never fails here
            escalated += len(models) - 1
    assert escalated > 0, "some cheap attempt failed in these seeds"


def test_registered_by_name_and_a_bad_threshold_is_a_config_error() -> None:
    assert isinstance(make_policy("direct_router"), DirectRouter)
    with pytest.raises(ConfigError, match="threshold must be between 0 and 1"):
        DirectRouter(threshold=1.5)
