"""Usage over a time window: spend, outcomes, latency and success, what the dashboard charts.

Everything about calls reads the pre-aggregates of stopped runs (`storage.run_rollups`),
so a month of a million calls costs a few thousand rows; runs still going count in the
outcome and spend totals from their run rows. Windows are by run start (UTC), days are
UTC calendar days.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.records import CallKind, CallStatus, Outcome
from storage._engine import make_engine, storage_error
from storage.models import RUN_MODEL_STATS, Attempt, Call, Run
from storage.run_rollups import (
    LATENCY_BOUNDS_S,
    TTFT_BOUNDS_S,
    latency_columns,
    quantile_from_buckets,
    ttft_columns,
)

__all__ = [
    "DailySpend",
    "ModelUsage",
    "PolicyUsage",
    "ReplicaUsage",
    "SubtaskModelSuccess",
    "Usage",
    "replica_usage",
    "subtask_success",
    "usage_since",
]


@dataclass(frozen=True, kw_only=True)
class DailySpend:
    """Spend of one UTC day under one key (a model or a workflow)."""

    day: date
    key: str
    spent_usd: Decimal


@dataclass(frozen=True, kw_only=True)
class ModelUsage:
    """One model's calls in stopped runs of the window."""

    model: str
    provider: str | None
    calls: int
    failed_calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    spent_usd: Decimal
    latency_mean_s: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None


@dataclass(frozen=True, kw_only=True)
class PolicyUsage:
    """One policy's runs in the window."""

    policy: str
    runs: int
    stopped: int
    completed: int
    spent_usd: Decimal
    completed_spent_usd: Decimal

    @property
    def completion_rate(self) -> float | None:
        """Completed runs over stopped runs."""
        return self.completed / self.stopped if self.stopped else None

    @property
    def cost_per_completed_usd(self) -> Decimal | None:
        """Mean spend of a completed run."""
        return self.completed_spent_usd / self.completed if self.completed else None


@dataclass(frozen=True, kw_only=True)
class Usage:
    """The window's totals and breakdowns."""

    since: datetime
    runs: int
    spent_usd: Decimal
    outcomes: dict[str, int]
    spend_by_model: list[DailySpend]
    spend_by_workflow: list[DailySpend]
    models: list[ModelUsage]
    policies: list[PolicyUsage]
    completed_by_workflow: dict[str, tuple[int, Decimal]]
    """Per workflow: completed runs and their spend (for the saving estimate)."""


@contextmanager
def _connection(target: str | URL | Engine) -> Iterator[Connection]:
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as error:
        raise storage_error("read usage from", engine, error) from error
    finally:
        if engine is not target:
            engine.dispose()


def _money(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(0)


def usage_since(target: str | URL | Engine, since: datetime) -> Usage:
    """Usage of the runs started at or after `since`.

    Raises:
        StorageError: the database cannot be read.
    """
    stats = RUN_MODEL_STATS.c
    day = sa.func.date(stats.started_at).label("day")
    with _connection(target) as db:
        outcomes = {
            str(o): int(n)
            for o, n in db.execute(
                sa.select(Run.outcome, sa.func.count()).where(Run.started_at >= since).group_by(Run.outcome)
            )
        }
        policies = [
            PolicyUsage(
                policy=row.policy,
                runs=int(row.runs),
                stopped=int(row.stopped or 0),
                completed=int(row.completed or 0),
                spent_usd=_money(row.spent),
                completed_spent_usd=_money(row.completed_spent),
            )
            for row in db.execute(
                sa.select(
                    Run.policy,
                    sa.func.count().label("runs"),
                    sa.func.sum(sa.case((Run.outcome != Outcome.RUNNING.value, 1), else_=0)).label("stopped"),
                    sa.func.sum(sa.case((Run.outcome == Outcome.COMPLETED.value, 1), else_=0)).label(
                        "completed"
                    ),
                    sa.func.sum(Run.spent_usd).label("spent"),
                    sa.func.sum(
                        sa.case((Run.outcome == Outcome.COMPLETED.value, Run.spent_usd), else_=None)
                    ).label("completed_spent"),
                )
                .where(Run.started_at >= since)
                .group_by(Run.policy)
                .order_by(Run.policy)
            )
        ]
        completed_by_workflow = {
            row.workflow: (int(row.n), _money(row.spent))
            for row in db.execute(
                sa.select(Run.workflow, sa.func.count().label("n"), sa.func.sum(Run.spent_usd).label("spent"))
                .where(Run.started_at >= since, Run.outcome == Outcome.COMPLETED.value)
                .group_by(Run.workflow)
            )
        }

        def daily(key: sa.ColumnElement[str]) -> list[DailySpend]:
            rows = db.execute(
                sa.select(day, key.label("key"), sa.func.sum(stats.cost_usd).label("spent"))
                .where(stats.started_at >= since)
                .group_by(day, key)
                .order_by(day, key)
            )
            return [
                DailySpend(day=_day(row.day), key=row.key or "(none)", spent_usd=_money(row.spent))
                for row in rows
            ]

        spend_by_model = daily(stats.model)
        spend_by_workflow = daily(stats.workflow)
        lat, ttft = latency_columns(), ttft_columns()
        sums = [
            sa.func.sum(getattr(stats, name)).label(name)
            for name in (
                "calls",
                "failed_calls",
                "input_tokens",
                "output_tokens",
                "cached_tokens",
                "cost_usd",
                "latency_sum_s",
                *lat,
                *ttft,
            )
        ]
        models = []
        for row in db.execute(
            sa.select(stats.model, sa.func.max(stats.provider).label("provider"), *sums)
            .where(stats.started_at >= since)
            .group_by(stats.model)
            .order_by(stats.model)
        ):
            m = row._mapping
            lat_counts = [int(m[c] or 0) for c in lat]
            ttft_counts = [int(m[c] or 0) for c in ttft]
            calls = int(m["calls"] or 0)
            models.append(
                ModelUsage(
                    model=m["model"] or "(none)",
                    provider=m["provider"],
                    calls=calls,
                    failed_calls=int(m["failed_calls"] or 0),
                    input_tokens=int(m["input_tokens"] or 0),
                    output_tokens=int(m["output_tokens"] or 0),
                    cached_tokens=int(m["cached_tokens"] or 0),
                    spent_usd=_money(m["cost_usd"]),
                    latency_mean_s=float(m["latency_sum_s"]) / calls if calls else None,
                    latency_p50_s=quantile_from_buckets(lat_counts, LATENCY_BOUNDS_S, 0.50),
                    latency_p95_s=quantile_from_buckets(lat_counts, LATENCY_BOUNDS_S, 0.95),
                    latency_p99_s=quantile_from_buckets(lat_counts, LATENCY_BOUNDS_S, 0.99),
                    ttft_p50_s=quantile_from_buckets(ttft_counts, TTFT_BOUNDS_S, 0.50),
                    ttft_p95_s=quantile_from_buckets(ttft_counts, TTFT_BOUNDS_S, 0.95),
                )
            )
    return Usage(
        since=since,
        runs=sum(outcomes.values()),
        spent_usd=sum((p.spent_usd for p in policies), Decimal(0)),
        outcomes=outcomes,
        spend_by_model=spend_by_model,
        spend_by_workflow=spend_by_workflow,
        models=models,
        policies=policies,
        completed_by_workflow=completed_by_workflow,
    )


def _day(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


@dataclass(frozen=True, kw_only=True)
class SubtaskModelSuccess:
    """How often one model's attempts at one subtask passed their check."""

    workflow: str
    subtask: str
    model: str
    attempts: int
    passed: int
    mean_latency_s: float | None

    @property
    def success_rate(self) -> float | None:
        """Passed over judged attempts."""
        return self.passed / self.attempts if self.attempts else None


def subtask_success(target: str | URL | Engine, since: datetime) -> list[SubtaskModelSuccess]:
    """Judged attempts (check passed or failed) per workflow, subtask and model, for runs started since.

    Raises:
        StorageError: the database cannot be read.
    """
    judged = Attempt.check_passed.is_not(None)
    with _connection(target) as db:
        rows = db.execute(
            sa.select(
                Run.workflow,
                Attempt.subtask,
                Attempt.model,
                sa.func.count().label("attempts"),
                sa.func.sum(sa.case((Attempt.check_passed.is_(True), 1), else_=0)).label("passed"),
                sa.func.avg(Attempt.ended_s - Attempt.started_s).label("latency"),
            )
            .join(Run, Run.run_id == Attempt.run_id)
            .where(judged, Run.started_at >= since)
            .group_by(Run.workflow, Attempt.subtask, Attempt.model)
            .order_by(Run.workflow, Attempt.subtask, Attempt.model)
        )
        return [
            SubtaskModelSuccess(
                workflow=row.workflow,
                subtask=row.subtask,
                model=row.model,
                attempts=int(row.attempts),
                passed=int(row.passed or 0),
                mean_latency_s=None if row.latency is None else float(row.latency),
            )
            for row in rows
        ]


@dataclass(frozen=True, kw_only=True)
class ReplicaUsage:
    """One replica of a pooled model, as its recorded calls show it."""

    model: str
    replica: str
    calls: int
    errors: int
    input_tokens: int
    cached_tokens: int
    mean_latency_s: float
    last_run_at: datetime | None
    """Start of the newest run that called it."""

    @property
    def hit_rate(self) -> float | None:
        """Share of prompt tokens served from the replica's prefix cache."""
        return self.cached_tokens / self.input_tokens if self.input_tokens else None


def replica_usage(target: str | URL | Engine, since: datetime) -> list[ReplicaUsage]:
    """Per replica of pooled models: calls, errors, prefix-cache hit rate, latency, for runs since.

    Raises:
        StorageError: the database cannot be read.
    """
    with _connection(target) as db:
        rows = db.execute(
            sa.select(
                Call.model,
                Call.replica,
                sa.func.count().label("calls"),
                sa.func.sum(sa.case((Call.status == CallStatus.ERROR.value, 1), else_=0)).label("errors"),
                sa.func.sum(Call.input_tokens).label("input_tokens"),
                sa.func.sum(Call.cached_tokens).label("cached_tokens"),
                sa.func.avg(Call.latency_s).label("latency"),
                sa.func.max(Run.started_at).label("last"),
            )
            .join(Run, Run.run_id == Call.run_id)
            .where(Call.replica.is_not(None), Call.kind == CallKind.LLM.value, Run.started_at >= since)
            .group_by(Call.model, Call.replica)
            .order_by(Call.model, Call.replica)
        )
        return [
            ReplicaUsage(
                model=row.model or "(none)",
                replica=row.replica,
                calls=int(row.calls),
                errors=int(row.errors or 0),
                input_tokens=int(row.input_tokens or 0),
                cached_tokens=int(row.cached_tokens or 0),
                mean_latency_s=float(row.latency or 0.0),
                last_run_at=row.last,
            )
            for row in rows
        ]
