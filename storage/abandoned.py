"""Runs whose process died: detected by a stale heartbeat, closed with the spend their calls prove.

While a run executes, the `SqlRecorder` that records it writes `runs.heartbeat_at`
every `HEARTBEAT_INTERVAL_S`. A run still `running` whose heartbeat is older than
`ABANDONED_AFTER_S` lost its process (SIGKILL, a crash, a lost machine): nothing will
ever finish it. Readers (`storage.queries`) show such a run as `abandoned` at once;
`mark_abandoned` (the `budgetflow runs mark-abandoned` command) closes it in the
database for good: outcome `abandoned`, spend = the sum of its recorded call costs
(every paid call is recorded before its cost is settled, so that sum is what the run
provably spent; calls in flight when the process died are not in it, see
docs/guarantees.md), its unfinished attempts and subtasks `cancelled`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.errors import ConfigError
from orchestrator.records import AttemptStatus, CallStatus, Outcome, SubtaskStatus
from storage._engine import make_engine, storage_error
from storage.models import Attempt, Call, Run, SubtaskExecution
from storage.run_rollups import rollup_run

__all__ = [
    "ABANDONED_AFTER_S",
    "HEARTBEAT_INTERVAL_S",
    "LOST_IN_CRASH_DETAIL",
    "AbandonedRun",
    "abandoned_cutoff",
    "close_lost_calls",
    "find_abandoned",
    "mark_abandoned",
    "proven_spend",
    "stale_condition",
]

HEARTBEAT_INTERVAL_S = 5.0
"""How often a recorder marks the runs it is recording as alive."""

ABANDONED_AFTER_S = 60.0
"""A `running` run whose last heartbeat is older than this is abandoned.

Twelve missed heartbeats: long enough that a loaded machine or a database failover
(whose writes are retried) does not make a live run look dead, short enough that an
operator sees a dead run within a minute."""


@dataclass(frozen=True, kw_only=True)
class AbandonedRun:
    """A run whose process stopped sending heartbeats."""

    run_id: str
    """The run."""
    workflow: str
    """Its workflow."""
    started_at: datetime
    """When it started (UTC)."""
    last_heartbeat: datetime | None
    """Its last heartbeat (UTC); `None` when it never sent one."""
    spent_usd: Decimal
    """The sum of its recorded call costs."""


def abandoned_cutoff(stale_after_s: float = ABANDONED_AFTER_S, *, now: datetime | None = None) -> datetime:
    """Heartbeats older than this mark a running run as abandoned."""
    if not stale_after_s > 0:
        raise ConfigError(f"the staleness limit must be a positive number of seconds, got {stale_after_s}")
    return (now or datetime.now(UTC)) - timedelta(seconds=stale_after_s)


def stale_condition(cutoff: datetime) -> sa.ColumnElement[bool]:
    """SQL: the run is `running` and its last sign of life is older than `cutoff`."""
    return sa.and_(
        Run.outcome == Outcome.RUNNING.value,
        sa.func.coalesce(Run.heartbeat_at, Run.started_at) < cutoff,
    )


def proven_spend() -> sa.ScalarSelect[Decimal]:
    """SQL: per run (correlated with `runs`), the sum of its recorded call costs."""
    return (
        sa.select(sa.func.coalesce(sa.func.sum(Call.cost_usd), 0))
        .where(Call.run_id == Run.run_id)
        .scalar_subquery()
    )


def find_abandoned(
    target: str | URL | Engine, *, stale_after_s: float = ABANDONED_AFTER_S, now: datetime | None = None
) -> list[AbandonedRun]:
    """Runs still `running` whose heartbeat is older than `stale_after_s`, oldest first.

    Raises:
        ConfigError: the URL or `stale_after_s` is invalid.
        StorageError: the database cannot be read.
    """
    cutoff = abandoned_cutoff(stale_after_s, now=now)
    engine, owned = _engine(target)
    query = (
        sa.select(Run.run_id, Run.workflow, Run.started_at, Run.heartbeat_at, proven_spend())
        .where(stale_condition(cutoff))
        .order_by(Run.started_at)
    )
    try:
        with engine.connect() as connection:
            rows = connection.execute(query).all()
    except SQLAlchemyError as error:
        raise storage_error("read", engine, error) from error
    finally:
        if owned:
            engine.dispose()
    return [
        AbandonedRun(
            run_id=run_id,
            workflow=workflow,
            started_at=_utc(started),
            last_heartbeat=None if beat is None else _utc(beat),
            spent_usd=Decimal(spent).quantize(Decimal("1e-9")),
        )
        for run_id, workflow, started, beat, spent in rows
    ]


LOST_IN_CRASH_DETAIL = "in flight when its process stopped; kept at its reservation"
"""The error text of a `lost_in_crash` call."""


def close_lost_calls(connection: Connection, run_id: str) -> int:
    """Mark the run's `in_flight` calls `lost_in_crash` and its running attempts `cancelled`,
    in the caller's transaction; the number of calls lost."""
    lost = connection.execute(
        sa.update(Call)
        .where(Call.run_id == run_id, Call.status == CallStatus.IN_FLIGHT.value)
        .values(status=CallStatus.LOST_IN_CRASH.value, error=LOST_IN_CRASH_DETAIL)
    ).rowcount
    connection.execute(
        sa.update(Attempt)
        .where(Attempt.run_id == run_id, Attempt.status == AttemptStatus.RUNNING.value)
        .values(status=AttemptStatus.CANCELLED.value, check_detail="its process stopped")
    )
    return int(lost or 0)


def mark_abandoned(
    target: str | URL | Engine,
    *,
    stale_after_s: float = ABANDONED_AFTER_S,
    run_ids: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[AbandonedRun]:
    """Close abandoned runs: outcome `abandoned`, spend proven by their calls, leftovers cancelled.

    Only runs that are still `running` with a stale heartbeat are touched (a run that
    came back to life in the meantime is left alone), each in its own transaction.

    Args:
        target: database URL or engine.
        stale_after_s: how old a heartbeat must be.
        run_ids: only these runs (each must be abandoned); `None`: every abandoned run.
        now: the current time (for tests).

    Returns:
        The runs closed.

    Raises:
        ConfigError: the URL or `stale_after_s` is invalid.
        StorageError: the database cannot be written.
    """
    found = find_abandoned(target, stale_after_s=stale_after_s, now=now)
    if run_ids is not None:
        wanted = set(run_ids)
        found = [run for run in found if run.run_id in wanted]
    cutoff = abandoned_cutoff(stale_after_s, now=now)
    engine, owned = _engine(target)
    closed: list[AbandonedRun] = []
    try:
        for run in found:
            with engine.begin() as connection:
                seen = run.last_heartbeat or run.started_at
                reason = (
                    f"abandoned: the process running it stopped at about {seen:%Y-%m-%d %H:%M:%S} UTC"
                    f" (no heartbeat for {stale_after_s:g}s); spent is the sum of its recorded calls,"
                    " calls in flight at that moment are not in it"
                )
                updated = connection.execute(
                    sa.update(Run)
                    .where(Run.run_id == run.run_id, stale_condition(cutoff))
                    .values(
                        outcome=Outcome.ABANDONED.value,
                        reason=reason,
                        spent_usd=run.spent_usd,
                        ended_at=seen,
                    )
                )
                if updated.rowcount != 1:
                    continue  # finished or came back meanwhile
                close_lost_calls(connection, run.run_id)
                connection.execute(
                    sa.update(SubtaskExecution)
                    .where(
                        SubtaskExecution.run_id == run.run_id,
                        SubtaskExecution.status.in_(
                            [
                                SubtaskStatus.PENDING.value,
                                SubtaskStatus.READY.value,
                                SubtaskStatus.RUNNING.value,
                            ]
                        ),
                    )
                    .values(status=SubtaskStatus.CANCELLED.value)
                )
                rollup_run(connection, run.run_id)
            closed.append(run)
    except SQLAlchemyError as error:
        raise storage_error("write to", engine, error) from error
    finally:
        if owned:
            engine.dispose()
    return closed


def _engine(target: str | URL | Engine) -> tuple[Engine, bool]:
    if isinstance(target, Engine):
        return target, False
    return make_engine(target, must_exist=True), True


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
