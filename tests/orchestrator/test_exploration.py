"""Exploration by Thompson sampling: beliefs drawn once per run, by as much as they are uncertain."""

from __future__ import annotations

import math
import statistics

import pytest

from orchestrator import RequestFeatures, TableEstimator, ThompsonEstimator
from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate, LogNormal

BELIEF = AttemptEstimate(success_prob=0.3, output_tokens=LogNormal(mean=200.0), latency_s=LogNormal(mean=2.0))
BELIEFS = {("s", "cheap"): BELIEF, ("s", "strong"): BELIEF}
TABLE = TableEstimator(BELIEFS)
NONE = RequestFeatures()


class _Weighed(TableEstimator):
    """A table whose `strong` belief weighs 400 attempts and `cheap` 4."""

    def evidence(self, subtask: str, model: str) -> float | None:
        return 400.0 if model == "strong" else 4.0


def _drawn(estimator: ThompsonEstimator, model: str) -> float:
    found = estimator.estimate("w", "s", model, NONE)
    assert found is not None
    return found.success_prob


def test_a_run_draws_each_belief_once_and_the_seed_repeats_it() -> None:
    run = ThompsonEstimator(TABLE, seed=7)
    first = _drawn(run, "cheap")
    assert _drawn(run, "cheap") == first, "the same belief for the whole run"
    assert _drawn(ThompsonEstimator(TABLE, seed=7), "cheap") == first
    assert _drawn(ThompsonEstimator(TABLE, seed=8), "cheap") != first
    assert run.estimate("w", "s", "unknown", NONE) is None, "no belief stays none"


def test_draws_spread_by_the_beliefs_uncertainty_around_it() -> None:
    cheap = [_drawn(ThompsonEstimator(_Weighed(BELIEFS), seed=seed), "cheap") for seed in range(2000)]
    strong = [_drawn(ThompsonEstimator(_Weighed(BELIEFS), seed=seed), "strong") for seed in range(2000)]
    # Centred on the belief on the log-odds scale: the median draw is the belief.
    assert statistics.median(cheap) == pytest.approx(0.3, abs=0.02)
    assert statistics.median(strong) == pytest.approx(0.3, abs=0.01)
    # Spread as a Beta(p k, (1 − p) k) belief: sd ≈ sqrt(p (1 − p) / (k + 1)).
    assert statistics.stdev(strong) == pytest.approx(math.sqrt(0.21 / 401), rel=0.15)
    assert statistics.stdev(cheap) > 5 * statistics.stdev(strong)
    # A belief known from few attempts is sometimes drawn far better than it is (so it is tried).
    assert sum(p > 0.6 for p in cheap) / len(cheap) >= 0.05
    assert max(strong) < 0.4


def test_the_default_weight_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="default_evidence"):
        ThompsonEstimator(TABLE, seed=1, default_evidence=0)
