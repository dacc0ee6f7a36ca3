"""The pooled estimator: shrinkage, errors kept out of success, censored latency, calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from orchestrator.estimator import RequestFeatures
from orchestrator.records import AttemptStatus
from storage.pooled_estimates import (
    MAX_STRENGTH,
    MIN_STRENGTH,
    PooledCell,
    PooledEstimates,
    censored_lognormal,
    pool_examples,
    pooled_estimates,
)
from storage.training_data import AttemptExample, AttemptOutcome, extract_examples
from tests.learning.records import Tried, record_run

PASSED, FAILED = AttemptStatus.PASSED, AttemptStatus.FAILED


def _verdicts(subtask: str, model: str, passes: int, failures: int) -> list[Tried]:
    return [Tried(status=PASSED, subtask=subtask, model=model)] * passes + [
        Tried(status=FAILED, subtask=subtask, model=model)
    ] * failures


def _cell(pooled: PooledEstimates, subtask: str, model: str) -> PooledCell:
    found = pooled.cell("w", subtask, model)
    assert found is not None
    return found


async def test_few_attempts_lean_on_the_pool_and_many_speak_for_themselves(db_url: str) -> None:
    tried = [
        *_verdicts("plan", "small", 28, 12),  # 0.70
        *_verdicts("plan", "large", 36, 4),  # 0.90
        *_verdicts("code", "small", 12, 28),  # 0.30
        *_verdicts("code", "large", 24, 16),  # 0.60
        *_verdicts("test", "small", 4, 36),  # 0.10
        *_verdicts("test", "large", 16, 24),  # 0.40
        *_verdicts("docs", "large", 170, 30),  # 0.85, 200 attempts
        *_verdicts("docs", "small", 0, 2),  # 0.00, 2 attempts
    ]
    await record_run(db_url, "r1", tried)
    pooled = pooled_estimates(db_url, workflow="w")

    few = _cell(pooled, "docs", "small")
    assert (few.passes, few.failures) == (0, 2)
    # Subtask `docs` is easy (0.85 on large) and `small` is worse than `large` everywhere:
    # the prior sits well above the raw 0.0, and two failures do not pull the cell to it.
    assert 0.4 < few.prior_mean < 0.85
    assert few.shrinkage > 0.5
    assert 0.0 < few.success_prob < few.prior_mean
    assert few.success_prob > 0.25

    many = _cell(pooled, "docs", "large")
    assert many.verdicts == 200
    assert many.shrinkage < 0.1
    assert abs(many.success_prob - 0.85) < 0.01
    assert MIN_STRENGTH <= many.strength <= MAX_STRENGTH


async def test_a_new_model_or_subtask_borrows_from_the_pool(sqlite_url: str) -> None:
    tried = [
        *_verdicts("plan", "small", 8, 2),
        *_verdicts("plan", "large", 10, 0),
        *_verdicts("code", "small", 2, 8),
        *_verdicts("code", "large", 7, 3),
    ]
    await record_run(sqlite_url, "r1", tried)
    pooled = pooled_estimates(sqlite_url)
    features = RequestFeatures()

    new_model = pooled.estimate("w", "code", "medium", features)  # never tried anywhere
    new_subtask = pooled.estimate("w", "review", "large", features)  # never recorded
    assert new_model is not None and new_subtask is not None
    assert abs(new_model.success_prob - _cell(pooled, "code", "small").prior_mean) < 0.3
    assert new_model.success_prob < new_subtask.success_prob  # `code` is hard, `large` is good
    assert new_subtask.success_prob > 0.75
    assert pooled.estimate("w", "review", "medium", features) is None  # nothing to borrow from
    assert pooled.estimate("other", "code", "small", features) is None
    assert set(pooled.table("w")) == {
        ("plan", "small"),
        ("plan", "large"),
        ("code", "small"),
        ("code", "large"),
    }


async def test_errors_and_cancelled_attempts_are_not_verdicts(db_url: str) -> None:
    tried = [
        *_verdicts("plan", "small", 3, 1),
        *[Tried(status=AttemptStatus.ERROR, detail="provider: 503") for _ in range(6)],
        *[Tried(status=AttemptStatus.CANCELLED, ended_s=4.0) for _ in range(2)],
    ]
    tried = [Tried(status=t.status, subtask="plan", model="small", ended_s=t.ended_s) for t in tried]
    await record_run(db_url, "r1", tried)
    examples = extract_examples(db_url)
    with_errors = pool_examples(examples)
    verdicts_only = pool_examples(e for e in examples if e.success is not None)

    cell = _cell(with_errors, "plan", "small")
    assert (cell.passes, cell.failures, cell.errors, cell.censored) == (3, 1, 6, 2)
    assert cell.success_prob == _cell(verdicts_only, "plan", "small").success_prob
    # The cancelled attempts ran 4 s, longer than any finished one (1 s): latency rises.
    assert cell.latency_s is not None and cell.latency_s.mean > 1.0


async def test_cancelled_siblings_raise_latency_where_dropping_them_would_not(sqlite_url: str) -> None:
    """Races of three samples; the first to pass cancels the slower ones (truth: mean 10 s)."""
    rng = np.random.default_rng(11)
    mean, std = 10.0, 6.0
    sigma = math.sqrt(math.log1p((std / mean) ** 2))
    mu = math.log(mean) - sigma**2 / 2
    tried: list[Tried] = []
    clock = 0.0
    for batch in range(120):
        latency = rng.lognormal(mu, sigma, 3)
        passes = rng.random(3) < 0.6
        won = min((float(latency[i]) for i in range(3) if passes[i]), default=math.inf)
        for i in range(3):
            if latency[i] <= won:
                status, took = (PASSED if passes[i] else FAILED), float(latency[i])
            else:
                status, took = AttemptStatus.CANCELLED, won
            tried.append(Tried(status=status, started_s=clock, ended_s=clock + took, batch=batch, sample=i))
        clock += float(min(won, latency.max()))
    await record_run(sqlite_url, "races", tried)
    examples = extract_examples(sqlite_url)
    assert sum(e.censored for e in examples) > 50

    pooled = _cell(pool_examples(examples), "report", "small").latency_s
    dropped = censored_lognormal([e.latency_s for e in examples if e.success is not None and e.latency_s])
    assert pooled is not None and dropped is not None
    assert dropped.mean < 0.85 * mean  # finished-only: the slow ones were cancelled
    assert dropped.mean < pooled.mean
    assert abs(pooled.mean - mean) / mean < 0.12


def _synthetic(
    p: np.ndarray, n: np.ndarray, rng: np.random.Generator
) -> tuple[list[AttemptExample], np.ndarray]:
    """Examples with `passes ~ Binomial(n, p)` per (subtask, model) cell; also the raw rates."""
    examples: list[AttemptExample] = []
    raw = np.zeros_like(p)
    started = datetime(2026, 1, 1, tzinfo=UTC)
    for (s, m), prob in np.ndenumerate(p):
        wins = rng.random(int(n[s, m])) < prob
        raw[s, m] = wins.mean()
        for i, won in enumerate(wins):
            examples.append(
                AttemptExample(
                    workflow="w",
                    subtask=f"s{s}",
                    model=f"m{m}",
                    litellm_model="openai/gpt-4o-mini",
                    run_id=f"r-{s}-{m}-{i}",
                    attempt_id=f"a-{s}-{m}-{i}",
                    batch=0,
                    sample=0,
                    run_started_at=started,
                    simulated=False,
                    outcome=AttemptOutcome.PASSED if won else AttemptOutcome.FAILED_CHECK,
                    output_tokens=200,
                    latency_s=2.0,
                )
            )
    return examples, raw


def _mse(p: np.ndarray, n: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Mean squared error against the true `p` of the pooled and of the raw per-cell rates."""
    examples, raw = _synthetic(p, n, rng)
    pooled = pool_examples(examples)
    learned = np.array(
        [[_cell(pooled, f"s{s}", f"m{m}").success_prob for m in range(p.shape[1])] for s in range(p.shape[0])]
    )
    return float(np.mean((learned - p) ** 2)), float(np.mean((raw - p) ** 2))


def test_pooled_rates_are_closer_to_the_truth_than_raw_rates() -> None:
    """20 seeded histories: 12 subtasks x 4 models, true p ~ Beta(3, 2) per cell, 2 to 12 verdicts each."""
    pooled, raw = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        p = rng.beta(3.0, 2.0, size=(12, 4))
        found = _mse(p, rng.integers(2, 13, size=p.shape), rng)
        pooled.append(found[0])
        raw.append(found[1])
    # Mean MSE 0.0218 pooled vs 0.0359 raw. With no model or subtask effects at all, the
    # fitted effects are noise, and in 1 of the 20 histories they cost more than they save.
    assert sum(a < b for a, b in zip(pooled, raw, strict=True)) >= 18, (pooled, raw)
    assert np.mean(pooled) < 0.7 * np.mean(raw), (np.mean(pooled), np.mean(raw))


def test_pooled_rates_with_model_and_subtask_effects_beat_raw_rates() -> None:
    """20 seeded histories: true log-odds = subtask effect + model effect + noise, 2 to 8 verdicts a cell."""
    pooled, raw = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        subtask = rng.normal(0.0, 1.0, size=(10, 1))
        model = np.array([[-1.0, 0.0, 1.2]])
        p = 1 / (1 + np.exp(-(subtask + model + rng.normal(0.0, 0.4, size=(10, 3)))))
        found = _mse(p, rng.integers(2, 9, size=p.shape), rng)
        pooled.append(found[0])
        raw.append(found[1])
    # Mean MSE 0.0220 pooled vs 0.0471 raw; pooled wins in every history.
    assert all(a < b for a, b in zip(pooled, raw, strict=True)), (pooled, raw)
    assert np.mean(pooled) < 0.55 * np.mean(raw), (np.mean(pooled), np.mean(raw))


def test_censored_lognormal_without_censoring_is_the_log_space_fit() -> None:
    values: Sequence[float] = [1.0, 2.0, 4.0]
    fit = censored_lognormal(values)
    assert fit is not None
    sigma2 = float(np.var(np.log(values)))
    assert math.isclose(fit.mean, 2.0 * math.exp(sigma2 / 2))
    assert censored_lognormal([], [3.0]) is None
