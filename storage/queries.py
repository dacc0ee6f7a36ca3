"""The read side: list runs, load one run, and build its calling tree.

Used by the CLI and the web UI. The functions are synchronous (they do
blocking database I/O); async callers run them on a thread. Each takes a
database URL (an engine is made and disposed per call, fine for a CLI) or
an `Engine` to reuse (what a long-lived server should pass).

Records come back as the same `orchestrator.records` dataclasses the
recorder received, so a run reads back equal to what was recorded.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from orchestrator.call_tree import AttemptNode, CallNode, CallTree
from orchestrator.call_tree import build_call_tree as _build
from orchestrator.errors import ConfigError, StorageError
from orchestrator.records import (
    AttemptRecord,
    CallKind,
    CallRecord,
    DecisionRecord,
    Outcome,
    RunRecord,
    SubtaskRecord,
)
from storage._engine import make_engine, redact, storage_error
from storage.abandoned import abandoned_cutoff, proven_spend, stale_condition
from storage.models import Attempt, Base, Call, PlanDecision, Run, SubtaskExecution

__all__ = [
    "AttemptNode",
    "CallNode",
    "CallTree",
    "RunDetail",
    "RunSummary",
    "build_call_tree",
    "get_run",
    "list_runs",
    "resolve_run_id",
    "workflow_names",
]


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One line of a run list."""

    run_id: str
    """Unique id."""
    workflow: str
    """Workflow name."""
    policy: str
    """Policy name."""
    outcome: Outcome
    """How the run ended (or `running`)."""
    budget_usd: Decimal
    """Hard budget."""
    spent_usd: Decimal
    """Settled spend (for a run still running or abandoned: the sum of its recorded call costs)."""
    overrun_usd: Decimal
    """Billed above the reservations, beyond the budget (see `RunRecord.overrun_usd`)."""
    started_at: datetime
    """Wall-clock start (UTC)."""
    ended_at: datetime | None
    """Wall-clock end (UTC)."""
    makespan_s: float | None
    """Start to end."""
    simulated: bool
    """Whether any model was simulated."""
    calls: int
    """Model calls recorded (LLM calls, retries included; agent and check spans are not calls)."""


@dataclass(frozen=True, kw_only=True)
class RunDetail:
    """Everything recorded about one run."""

    run: RunRecord
    """The run."""
    subtasks: tuple[SubtaskRecord, ...]
    """Subtask executions, by first start."""
    attempts: tuple[AttemptRecord, ...]
    """Attempts, by start."""
    calls: tuple[CallRecord, ...]
    """Calls (flat), by start."""
    decisions: tuple[DecisionRecord, ...]
    """Policy decisions, in order."""


def list_runs(target: str | URL | Engine, limit: int = 50, workflow: str | None = None) -> list[RunSummary]:
    """The most recent runs, newest first.

    Args:
        target: database URL or engine.
        limit: at most this many runs.
        workflow: only runs of this workflow.

    Raises:
        ConfigError: the URL or `limit` is invalid.
        StorageError: the database cannot be read.
    """
    if limit < 1:
        raise ConfigError(f"`limit` must be at least 1, got {limit}")
    calls = (
        sa.select(Call.run_id, sa.func.count().label("n"))
        .where(Call.kind == CallKind.LLM.value)
        .group_by(Call.run_id)
        .subquery("call_counts")
    )
    stale = sa.case((stale_condition(abandoned_cutoff()), True), else_=False)
    query = (
        sa.select(Run, sa.func.coalesce(calls.c.n, 0), proven_spend(), stale)
        .outerjoin(calls, calls.c.run_id == Run.run_id)
        .order_by(Run.started_at.desc(), Run.run_id.desc())
        .limit(limit)
    )
    if workflow is not None:
        query = query.where(Run.workflow == workflow)
    with _session(target) as session:
        return [
            _summary(run, calls=int(n), cost=cost, stale=is_stale)
            for run, n, cost, is_stale in session.execute(query)
        ]


def _summary(run: Run, *, calls: int, cost: object, stale: bool) -> RunSummary:
    """A run row as a summary: `abandoned` when its heartbeat is stale, and a running run's
    spend proven by its recorded calls (`cost`)."""
    return RunSummary(
        run_id=run.run_id,
        workflow=run.workflow,
        policy=run.policy,
        outcome=Outcome.ABANDONED if stale else Outcome(run.outcome),
        budget_usd=run.budget_usd,
        spent_usd=_proven(cost) if run.outcome == Outcome.RUNNING.value else run.spent_usd,
        overrun_usd=run.overrun_usd,
        started_at=run.started_at,
        ended_at=run.ended_at,
        makespan_s=run.makespan_s,
        simulated=run.simulated,
        calls=calls,
    )


def resolve_run_id(target: str | URL | Engine, prefix: str) -> str:
    """The id of the one run whose id is `prefix` or starts with it.

    Raises:
        ConfigError: no run matches, or several do (the message lists them).
        StorageError: the database cannot be read.
    """
    wanted = prefix.strip()
    if not wanted:
        raise ConfigError("the run id is empty; `budgetflow runs list` shows the ids")
    with _session(target) as session:
        if session.get(Run, wanted) is not None:
            return wanted
        matches = list(
            session.execute(
                sa.select(Run.run_id, Run.workflow, Run.started_at)
                .where(Run.run_id.startswith(wanted, autoescape=True))
                .order_by(Run.started_at.desc())
                .limit(_AMBIGUOUS_SHOWN + 1)
            )
        )
    if not matches:
        raise ConfigError(f"no run has an id starting with `{wanted}`; `budgetflow runs list` shows the ids")
    if len(matches) > 1:
        shown = ", ".join(
            f"`{run_id}` ({workflow}, {started:%Y-%m-%d %H:%M})"
            for run_id, workflow, started in matches[:_AMBIGUOUS_SHOWN]
        )
        more = " and more" if len(matches) > _AMBIGUOUS_SHOWN else ""
        raise ConfigError(
            f"the run id prefix `{wanted}` is ambiguous: it starts {shown}{more}; give more characters"
        )
    run_id: str = matches[0][0]
    return run_id


_AMBIGUOUS_SHOWN = 5
"""Runs an ambiguous-prefix message lists."""


def workflow_names(target: str | URL | Engine) -> list[str]:
    """The names of the workflows with recorded runs, sorted.

    Raises:
        StorageError: the database cannot be read.
    """
    with _session(target) as session:
        return list(session.scalars(sa.select(Run.workflow).distinct().order_by(Run.workflow)))


def get_run(target: str | URL | Engine, run_id: str) -> RunDetail:
    """Everything recorded about run `run_id`.

    Raises:
        ConfigError: the URL is invalid.
        StorageError: no such run, or the database cannot be read.
    """
    with _session(target) as session:
        run = session.get(Run, run_id)
        if run is None:
            raise StorageError(f"run `{run_id}` not found; `budgetflow runs list` shows the ids")
        subtasks = session.scalars(
            sa.select(SubtaskExecution)
            .where(SubtaskExecution.run_id == run_id)
            .order_by(SubtaskExecution.started_s.is_(None), SubtaskExecution.started_s)
            .order_by(SubtaskExecution.subtask)
        )
        attempts = session.scalars(
            sa.select(Attempt).where(Attempt.run_id == run_id).order_by(Attempt.started_s, Attempt.attempt_id)
        )
        calls = session.scalars(
            sa.select(Call).where(Call.run_id == run_id).order_by(Call.started_s, Call.call_id)
        )
        decisions = session.scalars(
            sa.select(PlanDecision).where(PlanDecision.run_id == run_id).order_by(PlanDecision.decision_index)
        )
        record = _record(run, RunRecord)
        if record.outcome is Outcome.RUNNING:
            # Live or dead, a running run has spent what its recorded calls cost.
            stale = session.scalar(sa.select(stale_condition(abandoned_cutoff())).where(Run.run_id == run_id))
            spent = session.scalar(sa.select(proven_spend()).where(Run.run_id == run_id))
            record = dataclasses.replace(
                record,
                outcome=Outcome.ABANDONED if stale else Outcome.RUNNING,
                spent_usd=_proven(spent),
                reason="abandoned: no heartbeat from the process running it; `budgetflow runs"
                " mark-abandoned` closes it"
                if stale
                else record.reason,
            )
        return RunDetail(
            run=record,
            subtasks=tuple(_record(row, SubtaskRecord) for row in subtasks),
            attempts=tuple(_record(row, AttemptRecord) for row in attempts),
            calls=tuple(_record(row, CallRecord) for row in calls),
            decisions=tuple(_decision_record(row) for row in decisions),
        )


def _proven(cost: object) -> Decimal:
    return Decimal(0) if cost is None else Decimal(str(cost)).quantize(Decimal("1e-9"))


def build_call_tree(detail: RunDetail) -> CallTree:
    """The run's calling tree (attempts -> calls -> child calls), as `orchestrator.call_tree` builds it."""
    return _build(detail.run.run_id, detail.attempts, detail.calls)


@contextmanager
def _session(target: str | URL | Engine) -> Iterator[Session]:
    """A read-only session; database errors become `StorageError`."""
    owned = not isinstance(target, Engine)
    engine = make_engine(target, must_exist=True) if not isinstance(target, Engine) else target
    try:
        with Session(engine) as session:
            try:
                yield session
            except SQLAlchemyError as error:
                session.rollback()
                raise _read_error(engine, error) from error
    finally:
        if owned:
            engine.dispose()


def _read_error(engine: Engine, error: SQLAlchemyError) -> StorageError:
    try:
        migrated = sa.inspect(engine).has_table(Run.__tablename__)
    except SQLAlchemyError:
        migrated = True  # unreachable: report the original error
    if not migrated:
        return StorageError(
            f"database `{redact(engine.url)}` has no budgetflow tables; they are created when "
            "a run is recorded there, or by `storage.migrate.upgrade(url)`"
        )
    return storage_error("read", engine, error)


_R = TypeVar("_R", RunRecord, SubtaskRecord, AttemptRecord, CallRecord)


def _record(row: Base, record_type: type[_R]) -> _R:
    """The record whose fields have the same names as the row's columns (enums rebuilt from text)."""
    values: dict[str, Any] = {}
    for name, enum in _fields(record_type):
        value = getattr(row, name)
        values[name] = value if enum is None else enum(value)
    return record_type(**values)


_FIELDS: dict[type, tuple[tuple[str, type[StrEnum] | None], ...]] = {}


def _fields(record_type: type[_R]) -> tuple[tuple[str, type[StrEnum] | None], ...]:
    """A record type's field names, each with its enum type if it is one (type hints are slow,
    so they are read once per type)."""
    known = _FIELDS.get(record_type)
    if known is None:
        hints = typing.get_type_hints(record_type)
        known = _FIELDS[record_type] = tuple(
            (field.name, kind if isinstance(kind, type) and issubclass(kind, StrEnum) else None)
            for field in dataclasses.fields(record_type)
            for kind in (hints[field.name],)
        )
    return known


def _decision_record(row: PlanDecision) -> DecisionRecord:
    return DecisionRecord(
        run_id=row.run_id,
        index=row.decision_index,
        at_s=row.at_s,
        policy=row.policy,
        state=row.state,
        allocation=row.allocation,
        info=row.info,
        decide_ms=row.decide_ms,
    )
