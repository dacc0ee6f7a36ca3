"""Why cancelled siblings are kept as censored latencies: dropping them learns latency biased low.

A seeded synthetic history of races: batches of three samples whose latencies are
lognormal (median 8.6 s) and whose success is independent of latency; the first
sample to pass wins and cancels the siblings still running. The slow samples are the
ones that get cancelled, so the completed-only latencies are too fast. The examples
extracted from the database keep the cancelled ones as right-censored observations,
and a Kaplan-Meier estimate on them recovers the true distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import sqlalchemy as sa

from orchestrator.records import AttemptStatus, Outcome
from storage import AttemptExample, AttemptOutcome, extract_examples, make_engine, upgrade
from storage.models import Attempt, Run

MEAN_S, STD_S = 10.0, 6.0
SIGMA = math.sqrt(math.log1p((STD_S / MEAN_S) ** 2))
MU = math.log(MEAN_S) - SIGMA**2 / 2
TRUE_MEDIAN, TRUE_P75 = math.exp(MU), math.exp(MU + SIGMA * 0.6744897501960817)


def km_quantile(examples: Sequence[AttemptExample], q: float) -> float:
    """The `q` quantile of latency from the Kaplan-Meier survival curve (cancelled = censored)."""
    observed = sorted((e.latency_s, not e.censored) for e in examples if e.latency_observed and e.latency_s)
    at_risk, survival = len(observed), 1.0
    for latency, event in observed:
        if event:
            survival *= 1 - 1 / at_risk
            if survival <= 1 - q:
                return latency
        at_risk -= 1
    raise AssertionError(f"the survival curve never falls to {1 - q}")


def _record_races(url: str, *, batches: int, k: int, p: float, seed: int) -> None:
    """Bulk-write `batches` races of `k` samples each as one real run of workflow `races`."""
    rng = np.random.default_rng(seed)
    upgrade(url)
    attempts: list[dict[str, object]] = []
    clock = 0.0
    for b in range(batches):
        latency = rng.lognormal(MU, SIGMA, k)
        passes = rng.random(k) < p
        won = min((latency[i] for i in range(k) if passes[i]), default=math.inf)
        for i in range(k):
            if latency[i] < won or (passes[i] and latency[i] == won):
                status = AttemptStatus.PASSED if passes[i] else AttemptStatus.FAILED
                ended = latency[i]
            else:  # still running when a sibling won: cancelled then
                status, ended = AttemptStatus.CANCELLED, won
            attempts.append(
                {
                    "attempt_id": f"b{b}-s{i}",
                    "run_id": "races",
                    "subtask": "report",
                    "model": "small",
                    "batch": b,
                    "sample": i,
                    "max_tokens": 1000,
                    "started_s": clock,
                    "status": status.value,
                    "ended_s": clock + float(ended),
                    "check_passed": None,
                    "check_detail": None,
                    "check_simulated": False,
                    "output_preview": None,
                    "spent_usd": Decimal(0),
                }
            )
        clock += float(min(won, latency.max()))
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            started = datetime.now(UTC) - timedelta(hours=1)
            connection.execute(
                sa.insert(Run),
                [
                    {
                        "run_id": "races",
                        "workflow": "races",
                        "policy": "mcpp",
                        "budget_usd": Decimal(100),
                        "deadline_s": None,
                        "seed": seed,
                        "simulated": False,
                        "started_at": started,
                        "ended_at": started + timedelta(seconds=clock),
                        "inputs": {},
                        "outcome": Outcome.COMPLETED.value,
                        "reason": None,
                        "spent_usd": Decimal(0),
                        "makespan_s": clock,
                    }
                ],
            )
            connection.execute(sa.insert(Attempt), attempts)
    finally:
        engine.dispose()


def test_dropping_cancelled_attempts_biases_latency_low_and_censoring_does_not(sqlite_url: str) -> None:
    _record_races(sqlite_url, batches=700, k=3, p=0.5, seed=14)
    examples = extract_examples(sqlite_url, workflow="races")
    assert len(examples) == 2100
    cancelled = [e for e in examples if e.outcome is AttemptOutcome.CANCELLED]
    assert len(cancelled) > 500 and all(e.censored and e.latency_s is not None for e in cancelled)

    completed = np.array([e.latency_s for e in examples if e.success is not None], dtype=float)
    naive_median, naive_p75 = np.quantile(completed, [0.5, 0.75])
    assert naive_median < 0.85 * TRUE_MEDIAN, "completed-only latencies are biased low"
    assert naive_p75 < 0.85 * TRUE_P75

    assert abs(km_quantile(examples, 0.5) - TRUE_MEDIAN) < 0.07 * TRUE_MEDIAN
    assert abs(km_quantile(examples, 0.75) - TRUE_P75) < 0.07 * TRUE_P75
