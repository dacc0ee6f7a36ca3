"""Per run and model pre-aggregates of the calling tree: what the dashboard's overview reads.

Charting a month of runs must not scan a million calls. When a run stops (its final
row is written, or it is marked abandoned), `rollup_run` writes one row per model it
called into `run_model_stats`, in the same transaction: calls, failed calls, tokens,
cost, latency and time-to-first-token sums and histograms. The rows of a finished run
never change, so writers never contend and a page sums a few rows per run.

Histograms count calls per bucket with geometric bounds 35% apart (`LATENCY_BOUNDS_S`,
`TTFT_BOUNDS_S`), one integer column per bucket so that the database sums them;
`quantile_from_buckets` reads a percentile off the summed counts (within half a bucket,
about 16%, of the exact value). Only model calls (`CallKind.LLM`) are counted.

`rebuild_rollups` computes the rows of every stopped run again (after a bulk import, or
to repair); the migration that created the table filled it that way.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from orchestrator.records import CallKind, CallStatus, Outcome
from storage._types import Money, UtcDateTime

__all__ = [
    "LATENCY_BOUNDS_S",
    "TTFT_BOUNDS_S",
    "latency_columns",
    "quantile_from_buckets",
    "rebuild_rollups",
    "rollup_run",
    "stats_columns",
    "ttft_columns",
]

_RATIO: Final = 1.35
_BUCKETS: Final = 31

LATENCY_BOUNDS_S: Final = tuple(round(0.05 * _RATIO**k, 6) for k in range(_BUCKETS))
"""Upper bounds of the call latency buckets, 50 ms to about 4 min; one more bucket above."""
TTFT_BOUNDS_S: Final = tuple(round(0.01 * _RATIO**k, 6) for k in range(_BUCKETS))
"""Upper bounds of the time-to-first-token buckets, 10 ms to about 50 s; one more bucket above."""


def latency_columns() -> list[str]:
    """Names of the latency bucket columns, lowest first (the last counts what lies above all bounds)."""
    return [f"lat_{i:02d}" for i in range(_BUCKETS + 1)]


def ttft_columns() -> list[str]:
    """Names of the time-to-first-token bucket columns, lowest first."""
    return [f"ttft_{i:02d}" for i in range(_BUCKETS + 1)]


def stats_columns() -> list[sa.Column[object]]:
    """The columns of `run_model_stats` (the schema and its migration both build from this)."""
    columns: list[sa.Column[object]] = [
        sa.Column(
            "run_id", sa.String(64), sa.ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("provider", sa.String(200), nullable=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("failed_calls", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", Money(), nullable=False),
        sa.Column("latency_sum_s", sa.Float(), nullable=False),
        sa.Column("ttft_calls", sa.Integer(), nullable=False),
        sa.Column("ttft_sum_s", sa.Float(), nullable=False),
    ]
    columns += [sa.Column(name, sa.Integer(), nullable=False) for name in latency_columns()]
    columns += [sa.Column(name, sa.Integer(), nullable=False) for name in ttft_columns()]
    return columns


def quantile_from_buckets(counts: Sequence[int], bounds: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0..1) of values counted in `counts` (one bucket per bound, one above).

    Interpolates geometrically inside the bucket that holds it; the bucket above the last
    bound answers that bound. `None` when nothing was counted.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            upper = bounds[i]
            lower = bounds[i - 1] if i > 0 else upper / _RATIO
            share = (rank - seen) / count
            return float(lower * math.exp(share * math.log(upper / lower)))
        seen += count
    return bounds[-1]


@dataclass
class _Stats:
    provider: str | None
    calls: int = 0
    failed_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_sum_s: float = 0.0
    ttft_calls: int = 0
    ttft_sum_s: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * (_BUCKETS + 1))
    ttft: list[int] = field(default_factory=lambda: [0] * (_BUCKETS + 1))


def _table(connection: Connection) -> tuple[sa.Table, sa.Table, sa.Table]:
    from storage.models import RUN_MODEL_STATS, Call, Run

    return RUN_MODEL_STATS, Run.__table__, Call.__table__  # type: ignore[return-value]


def rollup_run(connection: Connection, run_id: str) -> int:
    """Write the `run_model_stats` rows of a stopped run (replacing any); the number written.

    Runs inside the caller's transaction.
    """
    stats_table, runs, calls = _table(connection)
    run = connection.execute(
        sa.select(runs.c.workflow, runs.c.policy, runs.c.started_at, runs.c.outcome).where(
            runs.c.run_id == run_id
        )
    ).one_or_none()
    connection.execute(sa.delete(stats_table).where(stats_table.c.run_id == run_id))
    if run is None or run.outcome == Outcome.RUNNING.value:
        return 0
    rows = connection.execute(
        sa.select(
            calls.c.model,
            calls.c.provider,
            calls.c.status,
            calls.c.input_tokens,
            calls.c.output_tokens,
            calls.c.cached_tokens,
            calls.c.cost_usd,
            calls.c.latency_s,
            calls.c.ttft_s,
        ).where(calls.c.run_id == run_id, calls.c.kind == CallKind.LLM.value)
    )
    by_model: dict[str, _Stats] = {}
    for row in rows:
        stats = by_model.get(row.model or "")
        if stats is None:
            stats = by_model[row.model or ""] = _Stats(provider=row.provider)
        stats.calls += 1
        stats.failed_calls += row.status == CallStatus.ERROR.value
        stats.input_tokens += row.input_tokens
        stats.output_tokens += row.output_tokens
        stats.cached_tokens += row.cached_tokens
        stats.cost_usd += row.cost_usd
        stats.latency_sum_s += row.latency_s
        stats.latency[bisect.bisect_left(LATENCY_BOUNDS_S, row.latency_s)] += 1
        if row.ttft_s is not None:
            stats.ttft_calls += 1
            stats.ttft_sum_s += row.ttft_s
            stats.ttft[bisect.bisect_left(TTFT_BOUNDS_S, row.ttft_s)] += 1
    values = []
    for model, stats in by_model.items():
        value: dict[str, object] = {
            "run_id": run_id,
            "model": model,
            "provider": stats.provider,
            "workflow": run.workflow,
            "policy": run.policy,
            "started_at": run.started_at,
            "calls": stats.calls,
            "failed_calls": stats.failed_calls,
            "input_tokens": stats.input_tokens,
            "output_tokens": stats.output_tokens,
            "cached_tokens": stats.cached_tokens,
            "cost_usd": stats.cost_usd,
            "latency_sum_s": stats.latency_sum_s,
            "ttft_calls": stats.ttft_calls,
            "ttft_sum_s": stats.ttft_sum_s,
        }
        value.update(zip(latency_columns(), stats.latency, strict=True))
        value.update(zip(ttft_columns(), stats.ttft, strict=True))
        values.append(value)
    if values:
        connection.execute(sa.insert(stats_table), values)
    return len(values)


def rebuild_rollups(target: Engine | Connection) -> int:
    """Recompute the rows of every stopped run; the number of runs rolled up."""
    if isinstance(target, Engine):
        with target.begin() as connection:
            return rebuild_rollups(connection)
    _, runs, _ = _table(target)
    run_ids = target.execute(
        sa.select(runs.c.run_id).where(runs.c.outcome != Outcome.RUNNING.value)
    ).scalars()
    count = 0
    for run_id in list(run_ids):
        rollup_run(target, run_id)
        count += 1
    return count
