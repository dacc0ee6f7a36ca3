"""Baselines on small cases, and the registry."""

from __future__ import annotations

import pytest

from budgetflow import simulate
from orchestrator.errors import ConfigError
from orchestrator.records import Outcome
from policies import make_policy, policy_names
from policies.budget_splits import StaticSplit, critical_path_weights, uniform_weights
from policies.pacing import DualMirrorDescent, ThresholdRouter
from tests.policies.conftest import WorkflowFactory, initial_state, samples


def test_static_split_dispatches_once_and_never_retries(chain: WorkflowFactory) -> None:
    est = {"small": samples(0.0, 300, 3.0)}
    wf, cat = chain(est, {"small": "0.4"}, n=2)
    result = simulate(
        wf, catalog=cat, policy=StaticSplit(weights=uniform_weights), budget_usd=0.01, deadline_s=100, seed=0
    )
    assert result.outcome is Outcome.FAILED
    first = result.decisions[0].allocation["s0"]
    assert first["samples"] == int(0.005 // (0.4e-6 * samples(0.0, 300, 3.0).mean_output_tokens()))
    assert all(d.allocation == {} for d in result.decisions[1:])


def test_critical_path_weights_favour_the_long_branch(chain: WorkflowFactory) -> None:
    wf, cat = chain({"small": samples(0.5, 300, 3.0)}, {"small": "0.4"}, n=4)
    w = critical_path_weights(initial_state(wf, cat, 1.0, None), 0)
    assert w["s0"] == w["s3"] >= w["s1"] > 0


def test_threshold_router_picks_the_cheapest_model_clearing_the_threshold(chain: WorkflowFactory) -> None:
    est = {"tiny": samples(0.3, 300, 3.0), "mid": samples(0.8, 300, 3.0), "big": samples(0.95, 300, 3.0)}
    wf, cat = chain(est, {"tiny": "0.1", "mid": "1", "big": "10"}, n=1)
    state = initial_state(wf, cat, 1.0, None)
    assert ThresholdRouter(threshold=0.7).decide(state).assignments["s0"].model == "mid"
    assert ThresholdRouter(threshold=0.99).decide(state).assignments["s0"].model == "big"


def test_dual_mirror_descent_buys_reliability_only_when_the_budget_allows(chain: WorkflowFactory) -> None:
    est = {"small": samples(0.5, 300, 3.0), "large": samples(0.9, 3000, 6.0)}
    wf, cat = chain(est, {"small": "0.4", "large": "10"}, n=3)
    tight = DualMirrorDescent().decide(initial_state(wf, cat, 0.001, None))
    assert tight.assignments["s0"].model == "small"
    rich = DualMirrorDescent()
    assert (
        rich.decide(initial_state(wf, cat, 10.0, None)).assignments["s0"].samples
        > tight.assignments["s0"].samples
    )
    assert rich.mu < rich.mu0  # spent far below the pace: the dual price falls
    result = simulate(wf, catalog=cat, policy=DualMirrorDescent(), budget_usd=0.05, deadline_s=120, seed=1)
    assert result.spent_usd <= 0.05


def test_registry_names_and_aliases() -> None:
    names = policy_names()
    for expected in (
        "mcpp",
        "mcpp_full",
        "split_uniform",
        "split_dirichlet",
        "split_latency",
        "split_success",
        "split_critical_path",
        "threshold_router",
        "dual_mirror_descent",
    ):
        assert expected in names
        assert make_policy(expected, seed=1).name == expected
    alias = make_policy("sequential_4:small")
    assert alias.name == "sequential_4:small"
    with pytest.raises(ConfigError, match="sequential_K:MODEL"):
        make_policy("sequential_x:small")
    with pytest.raises(ConfigError, match="did you mean `mcpp`"):
        make_policy("mcp")


def test_public_surface_is_sorted_and_importable() -> None:
    import policies

    assert len(set(policies.__all__)) == len(policies.__all__)
    for name in policies.__all__:
        assert hasattr(policies, name)
