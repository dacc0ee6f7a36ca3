"""Read where a stopped run is, from its calling tree, so that it can continue (`orchestrator.resume`).

`resume_point(db, run_id)` closes what the dead process left open, in one transaction:
calls journaled `in_flight` become `lost_in_crash`, kept at their reservation (the
provider may have billed up to it; the recorded cost never undercounts), and attempts
still `running` become `cancelled`. It then returns the run's completed subtasks with
their outputs, the attempt and batch counts, the spend its calls prove, and the next
free ids. The run must have stopped: `abandoned`, or `running` with a heartbeat older
than `stale_after_s` (a live process is never taken over; see `storage.abandoned`).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.errors import ConfigError
from orchestrator.ledger import usd_to_nano
from orchestrator.records import Outcome, SubtaskStatus
from orchestrator.resume import ResumePoint
from storage._engine import make_engine, storage_error
from storage.abandoned import ABANDONED_AFTER_S, abandoned_cutoff, close_lost_calls
from storage.models import Run
from storage.queries import get_run

__all__ = ["resume_point"]


def resume_point(
    target: str | URL | Engine,
    run_id: str,
    *,
    stale_after_s: float | None = ABANDONED_AFTER_S,
    now: datetime | None = None,
    owner: str | None = None,
) -> ResumePoint:
    """Where run `run_id` stopped; closes the calls and attempts its process left open.

    A running run is resumed only when its heartbeat is `stale_after_s` old; `None`: whatever
    its heartbeat, for a caller that knows its process lost it (a worker taking over a dead
    worker's run, with `owner`: a paused old process may still beat once before it sees it).
    With `owner`, the run's records belong to that fencing token from now on, in the same
    transaction: a recorder of the old execution (`SqlRecorder(fence=)`) writes nothing more.

    Raises:
        ConfigError: the run ended (nothing to resume), or its process is alive (fresh heartbeat).
        StorageError: the run is not recorded, or the database cannot be read or written.
    """
    at = now or datetime.now(UTC)
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        get_run(engine, run_id)  # recorded at all? (a clear error if not)
        try:
            with engine.connect() as connection:
                row = connection.execute(
                    sa.select(Run.outcome, Run.heartbeat_at, Run.started_at).where(Run.run_id == run_id)
                ).one()
        except SQLAlchemyError as error:
            raise storage_error("read", engine, error) from error
        outcome = Outcome(row.outcome)
        if outcome not in (Outcome.RUNNING, Outcome.ABANDONED):
            raise ConfigError(
                f"run `{run_id}` ended `{outcome.value}`; only a run whose process stopped"
                " (running with a stale heartbeat, or abandoned) can be resumed"
            )
        beat = row.heartbeat_at or row.started_at
        if (
            stale_after_s is not None
            and outcome is Outcome.RUNNING
            and beat > abandoned_cutoff(stale_after_s, now=at)
        ):
            raise ConfigError(
                f"run `{run_id}` is running: its process beat at {beat:%H:%M:%S} UTC, less than"
                f" {stale_after_s:g}s ago; stop that process first, or wait until its heartbeat"
                " is stale"
            )
        try:
            with engine.begin() as connection:
                if owner is not None:
                    connection.execute(sa.update(Run).where(Run.run_id == run_id).values(owner=owner))
                lost = close_lost_calls(connection, run_id)
        except SQLAlchemyError as error:
            raise storage_error("resume a run in", engine, error) from error
        detail = get_run(engine, run_id)
    finally:
        if engine is not target:
            engine.dispose()
    ids = [a.attempt_id for a in detail.attempts] + [c.call_id for c in detail.calls]
    numbers = [int(m.group(1)) for i in ids if (m := re.fullmatch(rf"{re.escape(run_id)}\.[as](\d+)", i))]
    batches: dict[str, int] = {}
    for attempt in detail.attempts:
        batches[attempt.subtask] = max(batches.get(attempt.subtask, 0), attempt.batch + 1)
    return ResumePoint(
        run=detail.run,
        completed={
            s.subtask: s
            for s in detail.subtasks
            if s.status is SubtaskStatus.COMPLETED and s.winner_attempt_id is not None
        },
        attempts=dict(Counter(a.subtask for a in detail.attempts)),
        batches=batches,
        spent_nano=sum(usd_to_nano(c.cost_usd) for c in detail.calls),
        next_id=max(numbers, default=-1) + 1,
        next_decision=max((d.index for d in detail.decisions), default=-1) + 1,
        lost_calls=lost,
        resumed_at=at,
    )
