"""Scores of the learning benchmark: prediction quality against the truth, and run-level statistics.

Predictions are scored against each held-out input's *true* distribution, in expectation
over its outcomes where that has a closed form (no sampling noise from drawing them):

- Brier = mean of (p̂ − p)² + p(1 − p), the expected squared error of p̂ against a draw;
- ECE = Σ_b (n_b / n)·|mean_b p̂ − mean_b p| over 10 equal-width bins of p̂ (the binned
  calibration error with infinitely many outcomes per input);
- AUROC: each (input, subtask, model) counts p as a positive and 1 − p as a negative,
  AUROC = P(p̂ of a positive > p̂ of a negative), ties counting ½;
- output-token MAE: |predicted median − y| averaged over `DRAWS` seeded draws y of the
  true output tokens (the median is the point prediction that minimises absolute error);
- p90 coverage: P(y ≤ predicted 90th percentile) under the true lognormal, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from orchestrator.estimates import AttemptEstimate, LogNormal

__all__ = [
    "PredictionScores",
    "bootstrap_ratio",
    "cost_at_completion",
    "reliability",
    "score_predictions",
]

ECE_BINS = 10
DRAWS = 20
"""Draws of the true output tokens per (input, subtask, model) for the MAE."""


@dataclass(frozen=True, kw_only=True)
class PredictionScores:
    """How well beliefs predict held-out inputs' attempts."""

    auroc: float
    brier: float
    ece: float
    output_tokens_mae: float
    output_tokens_p90_coverage: float
    n: int
    """(input, subtask, model) triples scored."""


def _lognormal_params(dist: LogNormal) -> tuple[float, float]:
    if dist.std == 0:
        return math.log(dist.mean), 1e-9
    sigma = math.sqrt(math.log1p((dist.std / dist.mean) ** 2))
    return math.log(dist.mean) - sigma**2 / 2, sigma


def score_predictions(
    pairs: Sequence[tuple[AttemptEstimate, AttemptEstimate]], *, seed: int = 0
) -> PredictionScores:
    """Score (predicted, true) estimate pairs, one per held-out (input, subtask, model)."""
    predicted = np.array([p.success_prob for p, _ in pairs])
    truth = np.array([t.success_prob for _, t in pairs])
    rng = np.random.default_rng([seed, 0xB0A7])
    errors, covered = [], []
    for pred, true in pairs:
        mu, sigma = _lognormal_params(true.output_tokens)
        drawn = rng.lognormal(mu, sigma, DRAWS)
        median = pred.output_token_quantile(0.5)
        errors.append(float(np.mean(np.abs(drawn - median))))
        q90 = pred.output_token_quantile(0.9)
        covered.append(NormalDist().cdf((math.log(max(q90, 1e-9)) - mu) / sigma))
    return PredictionScores(
        auroc=_weighted_auroc(predicted, truth),
        brier=float(np.mean((predicted - truth) ** 2 + truth * (1 - truth))),
        ece=_ece(predicted, truth),
        output_tokens_mae=float(np.mean(errors)),
        output_tokens_p90_coverage=float(np.mean(covered)),
        n=len(pairs),
    )


def _ece(predicted: NDArray[np.float64], truth: NDArray[np.float64]) -> float:
    bins = np.minimum((predicted * ECE_BINS).astype(int), ECE_BINS - 1)
    total = 0.0
    for b in range(ECE_BINS):
        mask = bins == b
        if mask.any():
            total += mask.mean() * abs(predicted[mask].mean() - truth[mask].mean())
    return float(total)


def reliability(predicted: Sequence[float], truth: Sequence[float]) -> list[tuple[float, float, int]]:
    """Per non-empty bin of predicted p: (mean predicted, mean true, count), for the chart."""
    pred, true = np.asarray(predicted, dtype=float), np.asarray(truth, dtype=float)
    bins = np.minimum((pred * ECE_BINS).astype(int), ECE_BINS - 1)
    return [
        (float(pred[bins == b].mean()), float(true[bins == b].mean()), int((bins == b).sum()))
        for b in range(ECE_BINS)
        if (bins == b).any()
    ]


def _weighted_auroc(predicted: NDArray[np.float64], truth: NDArray[np.float64]) -> float:
    order = np.argsort(predicted, kind="stable")
    pred, pos = predicted[order], truth[order]
    neg = 1 - pos
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    wins, neg_below, i = 0.0, 0.0, 0
    while i < len(pred):
        j = i
        while j < len(pred) and pred[j] == pred[i]:
            j += 1
        tied_pos, tied_neg = pos[i:j].sum(), neg[i:j].sum()
        wins += tied_pos * (neg_below + tied_neg / 2)
        neg_below += tied_neg
        i = j
    return float(wins / (total_pos * total_neg))


def bootstrap_ratio(
    method: NDArray[np.float64],
    low: NDArray[np.float64],
    high: NDArray[np.float64],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean(method) − mean(low)) / (mean(high) − mean(low)) with a 95% paired bootstrap interval.

    Each argument holds one value per evaluation input (e.g. its completion rate over the
    grid); inputs are resampled together, since every method ran on the same inputs.
    """

    def ratio(idx: NDArray[np.int64] | slice) -> float:
        gap = float(high[idx].mean() - low[idx].mean())
        return float((method[idx].mean() - low[idx].mean()) / gap) if gap > 0 else float("nan")

    point = ratio(slice(None))
    rng = np.random.default_rng([seed, 0xB007])
    draws = np.array([ratio(rng.integers(0, len(method), len(method))) for _ in range(resamples)])
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return point, float("nan"), float("nan")
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return point, float(lo), float(hi)


def cost_at_completion(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """Mean cost at which a (mean cost, completion) curve over rising budgets first reaches `target`.

    Linear between the measured budgets; `None` when it never does.
    """
    previous: tuple[float, float] | None = None
    for cost, completion in curve:
        if completion >= target:
            if previous is None or previous[1] >= completion:
                return cost
            share = (target - previous[1]) / (completion - previous[1])
            return previous[0] + share * (cost - previous[0])
        previous = (cost, completion)
    return None
