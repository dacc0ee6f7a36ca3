"""`SqlRecorder`: the `Recorder` that writes runs to SQLite or PostgreSQL.

All database work happens on one dedicated writer thread, so the event loop
never blocks on I/O and records are written in the order they arrived.
Events other than `call_finished` are queued and written in batches (one
transaction per batch): when `batch_size` events are waiting, after
`flush_interval_s`, before every `call_finished`, and on `aclose()`.
`call_finished` waits for its batch to commit, so a finished call (and
everything recorded before it) is durable when it returns, as the `Recorder`
protocol requires; `run_finished` does the same, so a run's final row is
durable too. A crash can lose only events queued after the last such call
and not yet flushed.

With `record_content=False` no model text is stored: prompts, responses and
the output previews of attempts and subtasks are written as `NULL`.

Every write is an upsert keyed by the record's id, so recording the same
record twice (an attempt's start then its end; a resumed run) replaces it.

Storage faults: a write that fails because the database is unreachable (a
PostgreSQL restart, a dropped connection, a locked SQLite file) is retried with
backoff for up to `retry_window_s`; if it still fails, or the database refuses
a row, the rows are kept in a spill file (`storage._spill`) and a
`StorageError` says so; the next recorder opened on the database writes them
back first. PostgreSQL cannot store the NUL character in text: it is written as
U+FFFD there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError

from orchestrator.errors import StorageError
from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    Outcome,
    RunRecord,
    SubtaskRecord,
)
from storage._engine import make_engine, redact, storage_error
from storage._spill import default_spill_path, read_spill, spill_rows
from storage.abandoned import HEARTBEAT_INTERVAL_S
from storage.migrate import upgrade
from storage.models import Attempt, Base, Call, PlanDecision, Run, SubtaskExecution
from storage.run_rollups import rollup_run

__all__ = ["RunFence", "RunFenced", "SqlRecorder"]

_log = logging.getLogger(__name__)

_CONTENT_FIELDS = frozenset({"prompt", "response", "output_preview", "output"})
_MODELS: dict[str, type[Base]] = {
    m.__tablename__: m for m in (Run, PlanDecision, Attempt, Call, SubtaskExecution)
}
RETRY_WINDOW_S = 30.0
"""How long a write is retried while the database is unreachable before its rows are spilled."""


@dataclass(frozen=True, slots=True)
class _Upsert:
    """One row to insert or replace."""

    model: type[Base]
    values: dict[str, object]


def _plain(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    return value


_Record = RunRecord | DecisionRecord | AttemptRecord | CallRecord | SubtaskRecord


def _run_row(run: RunRecord, *, record_content: bool) -> dict[str, object]:
    """A run's row, with a fresh heartbeat."""
    values = _row(run, record_content=record_content)
    values["heartbeat_at"] = datetime.now(UTC)
    return values


def _row(record: _Record, *, record_content: bool) -> dict[str, object]:
    """A record's fields as column values (enums to their values, content dropped if asked)."""
    values = {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if not record_content:
        for name in _CONTENT_FIELDS & values.keys():
            values[name] = None
    return values


class SqlRecorder:
    """Records runs in a SQL database; implements `orchestrator.records.Recorder`.

    Open it with `await SqlRecorder.open(url)` (which also migrates the
    schema) and close it with `await recorder.aclose()` or `async with`.

    Example:
        ```python
        async with await SqlRecorder.open("sqlite:///runs.db") as recorder:
            await recorder.run_started(run)
        ```
    """

    def __init__(
        self,
        engine: Engine,
        writer: ThreadPoolExecutor,
        *,
        record_content: bool = True,
        batch_size: int = 100,
        flush_interval_s: float = 0.5,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        retry_window_s: float = RETRY_WINDOW_S,
        spill_path: Path | None = None,
        fence: RunFence | None = None,
    ) -> None:
        """Wrap an engine whose schema is up to date; prefer `SqlRecorder.open`.

        Args:
            engine: engine from `storage` (used only on `writer`).
            writer: a single-thread executor that owns all database work.
            record_content: keep prompt, response and output-preview text;
                `False` stores `NULL` instead.
            batch_size: queued events that trigger a write.
            flush_interval_s: longest time a queued event waits for a write.
            heartbeat_interval_s: how often a running run's `heartbeat_at` is refreshed
                (a run whose heartbeat goes stale is shown as abandoned).
            retry_window_s: how long a write is retried while the database is unreachable.
            spill_path: where rows the database would not take are kept; `None`: nowhere
                (the `StorageError` is all that remains).
            fence: write only while the run's `owner` is this token (or unset, then claim it),
                checked in each write's transaction; once another execution took the run over,
                every write raises `RunFenced` and nothing more is written (or spilled).
        """
        if retry_window_s < 0:
            raise ValueError(f"retry_window_s must be >= 0, got {retry_window_s}")
        if heartbeat_interval_s <= 0:
            raise ValueError(f"heartbeat_interval_s must be positive, got {heartbeat_interval_s}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be positive, got {flush_interval_s}")
        self._engine = engine
        self._writer = writer
        self._record_content = record_content
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._pending: list[_Upsert] = []
        self._inflight: set[asyncio.Future[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._failure: BaseException | None = None
        self._statements: dict[type[Base], sa.Executable] = {}
        self._closed = False
        self._heartbeat_interval_s = heartbeat_interval_s
        self._heartbeats: dict[str, asyncio.Task[None]] = {}
        self._retry_window_s = retry_window_s
        self._closing = False
        self._spill_count = 0
        self._spill_path = spill_path
        self._postgres = engine.dialect.name == "postgresql"
        self._fence = fence

    @classmethod
    async def open(
        cls,
        url: str | URL,
        *,
        record_content: bool = True,
        migrate: bool = True,
        batch_size: int = 100,
        flush_interval_s: float = 0.5,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        retry_window_s: float = RETRY_WINDOW_S,
        spill_path: Path | None = None,
        fence: RunFence | None = None,
    ) -> SqlRecorder:
        """Connect to `url`, bring its schema to the newest revision, and return a recorder.

        Args:
            url: `sqlite:///path` or `postgresql+psycopg://...`.
            record_content: keep prompt, response and output-preview text.
            migrate: run the migrations (set `False` when a deploy step did).
            batch_size: queued events that trigger a write.
            flush_interval_s: longest time a queued event waits for a write.
            heartbeat_interval_s: how often a running run's heartbeat is refreshed.
            retry_window_s: how long a write is retried while the database is unreachable.
            spill_path: where rows the database would not take are kept (default: beside
                a SQLite file, or `~/.cache/budgetflow/spill/` for a server); rows spilled
                there earlier are written back now.
            fence: the run this recorder writes and the token of its execution (see `__init__`).

        Raises:
            ConfigError: the URL is invalid.
            StorageError: the database cannot be reached or migrated.
        """
        engine = make_engine(url)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budgetflow-sql-writer")
        recorder = cls(
            engine,
            writer,
            record_content=record_content,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            heartbeat_interval_s=heartbeat_interval_s,
            retry_window_s=retry_window_s,
            spill_path=spill_path,
            fence=fence,
        )
        try:
            database_id = await asyncio.wrap_future(writer.submit(_prepare, engine, migrate))
            if spill_path is None:
                recorder._spill_path = default_spill_path(engine.url, database_id)
            await asyncio.wrap_future(writer.submit(recorder._replay_spill))
        except BaseException:
            writer.submit(engine.dispose)
            writer.shutdown(wait=False)
            raise
        return recorder

    @property
    def spill_path(self) -> Path | None:
        """Where rows the database would not take are kept."""
        return self._spill_path

    @property
    def engine(self) -> Engine:
        """The engine written to (for readers in the same process, e.g. `storage.queries`)."""
        return self._engine

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def run_started(self, run: RunRecord) -> None:
        """Queue the run's row and start refreshing its heartbeat until it finishes."""
        self._queue(Run, _run_row(run, record_content=self._record_content))
        if run.run_id not in self._heartbeats:
            self._heartbeats[run.run_id] = asyncio.create_task(
                self._beat(run.run_id), name=f"budgetflow-heartbeat-{run.run_id}"
            )

    async def decision_made(self, decision: DecisionRecord) -> None:
        """Queue a plan decision."""
        values = _row(decision, record_content=self._record_content)
        values["decision_index"] = values.pop("index")
        self._queue(PlanDecision, values)

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        """Queue the attempt's row."""
        self._queue(Attempt, _row(attempt, record_content=self._record_content))

    async def call_started(self, call: CallRecord) -> None:
        """Journal a call about to be sent, and everything queued before it; wait for the commit.

        Raises:
            StorageError: this write, or an earlier queued one, failed.
        """
        await self._write_now(Call, _row(call, record_content=False))

    async def call_finished(self, call: CallRecord) -> None:
        """Write the call, and everything queued before it, and wait for the commit.

        Raises:
            StorageError: this write, or an earlier queued one, failed.
        """
        await self._write_now(Call, _row(call, record_content=self._record_content))

    async def _write_now(self, model: type[Base], values: dict[str, object]) -> None:
        self._queue(model, values, flush=False)
        batch = self._flush()
        if batch is not None:
            # Shielded: a cancelled caller must not drop a batch holding other records.
            # A failure is kept by `_batch_done` and raised just below.
            with contextlib.suppress(Exception):
                await asyncio.shield(batch)
        self._raise_failure()

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        """Queue the attempt's final row."""
        self._queue(Attempt, _row(attempt, record_content=self._record_content))

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        """Queue the subtask's row."""
        self._queue(SubtaskExecution, _row(subtask, record_content=self._record_content))

    async def run_finished(self, run: RunRecord) -> None:
        """Write the run's final row (and everything queued) and wait for the commit.

        Raises:
            StorageError: the write failed.
        """
        beat = self._heartbeats.pop(run.run_id, None)
        if beat is not None:
            beat.cancel()
        await self._write_now(Run, _run_row(run, record_content=self._record_content))

    async def flush(self) -> None:
        """Write everything queued and wait for the commit.

        Raises:
            StorageError: a write failed.
        """
        self._check_open()
        self._flush()
        if self._inflight:
            await asyncio.shield(asyncio.gather(*self._inflight, return_exceptions=True))
        self._raise_failure()

    async def aclose(self) -> None:
        """Flush, then release the connection pool and the writer thread. Idempotent.

        A write still retrying against an unreachable database stops retrying and
        spills its rows, so closing takes at most one backoff step.

        Raises:
            StorageError: a queued write failed, or records had to be kept in the spill
                file during this recorder's life (the recorder is closed anyway).
        """
        if self._closed:
            return
        self._closing = True  # a write still waiting for the database spills instead of waiting on
        for beat in self._heartbeats.values():
            beat.cancel()
        self._heartbeats.clear()
        try:
            await self.flush()
        finally:
            self._closed = True
            await asyncio.wrap_future(self._writer.submit(self._engine.dispose))
            self._writer.shutdown(wait=False)
        if self._spill_count:
            raise StorageError(
                f"{self._spill_count} record(s) could not be written to database"
                f" `{redact(self._engine.url)}` and are kept in `{self._spill_path}`; they are written"
                " there the next time budgetflow opens it"
            )

    # -- internals ---------------------------------------------------------------

    async def _beat(self, run_id: str) -> None:
        """Refresh `runs.heartbeat_at` of a running run until cancelled."""
        statement = sa.update(Run).where(Run.run_id == run_id, Run.outcome == "running")
        if self._fence is not None:  # a taken-over execution's beats would make its run look alive
            statement = statement.where(sa.or_(Run.owner.is_(None), Run.owner == self._fence.token))
        statement = statement.values(heartbeat_at=sa.bindparam("now"))

        def write() -> None:
            with self._engine.begin() as connection:
                connection.execute(statement, {"now": datetime.now(UTC)})

        while True:
            await asyncio.sleep(self._heartbeat_interval_s)
            try:
                await asyncio.wrap_future(self._writer.submit(write))
            except SQLAlchemyError as error:  # a missed beat is not a failed run
                _log.warning("heartbeat of run %s not written: %s", run_id, error)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the SQL recorder is closed; open a new one with `SqlRecorder.open`")

    def _queue(self, model: type[Base], values: dict[str, object], *, flush: bool = True) -> None:
        self._check_open()
        self._pending.append(_Upsert(model, values))
        if not flush:
            return
        if len(self._pending) >= self._batch_size:
            self._flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._flush_interval_s, self._flush)

    def _flush(self) -> asyncio.Future[None] | None:
        """Hand the queued rows to the writer thread; return the batch's future."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return None
        batch, self._pending = self._pending, []
        future = asyncio.wrap_future(self._writer.submit(self._write, batch))
        self._inflight.add(future)
        future.add_done_callback(self._batch_done)
        return future

    def _batch_done(self, future: asyncio.Future[None]) -> None:
        self._inflight.discard(future)
        error = None if future.cancelled() else future.exception()
        if error is not None and self._failure is None:
            self._failure = error

    def _raise_failure(self) -> None:
        error, self._failure = self._failure, None
        if error is None:
            return
        if isinstance(error, StorageError):
            raise error
        raise StorageError(f"recording failed: {error}") from error

    def _write(self, batch: list[_Upsert]) -> None:
        """Writer thread: one transaction for the whole batch, retried while the database is away.

        If the database refuses the batch, its rows are written again one transaction
        each, so one bad record does not take the good ones queued with it down. Rows
        that cannot be written are spilled (`storage._spill`) and the first failure raised.
        """
        give_up_at = time.monotonic() + self._retry_window_s
        delay = 0.05
        while True:
            try:
                self._write_rows(batch)
                return
            except SQLAlchemyError as error:
                if not _transient(error, self._engine.dialect.name):
                    break
                if self._closing or time.monotonic() + delay > give_up_at:
                    raise self._spilled("write to", error, batch) from error
                _log.warning("database write failed (%s); retrying in %.2fs", _first_line(error), delay)
                time.sleep(delay)
                delay = min(2.0, delay * 2)
        failed: list[_Upsert] = []
        first: SQLAlchemyError | None = None
        for row in batch:
            try:
                self._write_rows([row])
            except SQLAlchemyError as error:
                first = first or error
                failed.append(row)
        if first is not None:
            raise self._spilled("write to", first, failed) from first

    def _spilled(self, action: str, error: SQLAlchemyError, rows: list[_Upsert]) -> StorageError:
        """Keep `rows` in the spill file; the error says where they are."""
        base = storage_error(action, self._engine, error)
        if self._spill_path is None:
            return base
        try:
            spill_rows(self._spill_path, [(row.model.__tablename__, row.values) for row in rows])
            self._spill_count += len(rows)
        except OSError as spill_error:
            return StorageError(
                f"{base}; keeping {len(rows)} record(s) in `{self._spill_path}` failed too: {spill_error}"
            )
        return StorageError(
            f"{base}; {len(rows)} record(s) are kept in `{self._spill_path}` and are written to the"
            " database the next time budgetflow opens it"
        )

    def _replay_spill(self) -> None:
        """Writer thread: write back the rows spilled earlier, then remove the spill file.

        Rows the database refuses for good (not for being away) move to a `.rejected`
        file beside it, with a warning, so that one bad row never blocks recording.
        """
        path = self._spill_path
        if path is None or not path.exists():
            return
        rows = [_Upsert(_MODELS[table], values) for table, values in read_spill(path) if table in _MODELS]
        rejected: list[_Upsert] = []
        try:
            self._write_rows(rows)
        except SQLAlchemyError as error:
            if _transient(error, self._engine.dialect.name):
                raise StorageError(
                    f"{storage_error('write to', self._engine, error)}; the {len(rows)} record(s) kept"
                    f" in `{path}` from an earlier failure are still waiting to be written"
                ) from error
            for row in rows:
                try:
                    self._write_rows([row])
                except SQLAlchemyError:
                    rejected.append(row)
        if rejected:
            target = path.with_name(path.name + ".rejected")
            spill_rows(target, [(row.model.__tablename__, row.values) for row in rejected])
            _log.warning(
                "%d spilled record(s) were refused by the database; kept in %s", len(rejected), target
            )
        path.unlink()
        _log.warning("wrote back %d record(s) kept in %s", len(rows) - len(rejected), path)

    def _write_rows(self, rows: list[_Upsert]) -> None:
        """One transaction; a run's final row brings its pre-aggregates (`storage.run_rollups`) along."""
        with self._engine.begin() as connection:
            if self._fence is not None:
                self._check_fence(connection, self._fence)
            for row in rows:
                values = _without_nul(row.values) if self._postgres else row.values
                connection.execute(self._statement(row.model), values)
            if self._fence is not None:  # the run's first write claims it
                connection.execute(
                    sa.update(Run)
                    .where(Run.run_id == self._fence.run_id, Run.owner.is_(None))
                    .values(owner=self._fence.token)
                )
            for row in rows:
                if row.model is Run and row.values["outcome"] != Outcome.RUNNING.value:
                    rollup_run(connection, str(row.values["run_id"]))

    def _check_fence(self, connection: sa.Connection, fence: RunFence) -> None:
        """Writer thread, in the write's transaction: refuse if another execution owns the run.

        PostgreSQL locks the run's row until the commit, so a takeover waits for writes already
        going; SQLite's single writer orders them the same way.
        """
        query = sa.select(Run.owner).where(Run.run_id == fence.run_id)
        if self._postgres:
            query = query.with_for_update()
        owner = connection.execute(query).scalar_one_or_none()
        if owner is not None and owner != fence.token:
            raise RunFenced(
                f"run `{fence.run_id}` was taken over by another execution; this one writes nothing"
                " more (its records up to the takeover are kept)"
            )

    def _statement(self, model: type[Base]) -> sa.Executable:
        """Writer thread: the upsert statement for a model, built once."""
        statement = self._statements.get(model)
        if statement is None:
            statement = _upsert(self._engine.dialect.name, Base.metadata.tables[model.__tablename__])
            self._statements[model] = statement
        return statement


_KEPT_ON_UPSERT: Final = frozenset({"owner"})
"""Columns a record's upsert never overwrites: they are set by their own statements."""


@dataclass(frozen=True)
class RunFence:
    """The run a recorder writes and the fencing token of the execution writing it."""

    run_id: str
    token: str


class RunFenced(StorageError):
    """Another execution took the run over: this one must write nothing more."""


def _upsert(dialect: str, table: sa.Table) -> sa.Executable:
    """`INSERT ... ON CONFLICT (primary key) DO UPDATE SET <every other column>` (but `_KEPT_ON_UPSERT`)."""
    keys = [column.name for column in table.primary_key.columns]
    insert: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        insert = postgresql.insert(table)
    elif dialect == "sqlite":
        insert = sqlite.insert(table)
    else:  # pragma: no cover - parse_database_url admits only these two
        raise StorageError(f"no upsert for database dialect `{dialect}`")
    updates: dict[str, Any] = {
        column.name: insert.excluded[column.name]
        for column in table.columns
        if column.name not in keys and column.name not in _KEPT_ON_UPSERT
    }
    return insert.on_conflict_do_update(index_elements=keys, set_=updates)


def _transient(error: SQLAlchemyError, dialect: str) -> bool:
    """Whether `error` says the database is away for now (retry) rather than refusing the write."""
    if isinstance(error, DisconnectionError):
        return True
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, OperationalError | InterfaceError):
        if dialect == "sqlite":  # SQLite's OperationalError also means "no such table" and the like
            text = str(error.orig).lower()
            return "locked" in text or "busy" in text
        return True
    return False


def _first_line(error: BaseException) -> str:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


_NUL = "\x00"


def _without_nul(value: Any) -> Any:
    """PostgreSQL stores no NUL in text or JSON: replace it by U+FFFD (the replacement character)."""
    if isinstance(value, str):
        return value.replace(_NUL, "\ufffd") if _NUL in value else value
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _prepare(engine: Engine, migrate: bool) -> str:
    """Writer thread: migrate (or just check the connection); return the database's identity.

    The identity names the spill file (PostgreSQL: the database's OID; SQLite: none, the
    spill file lies beside the database file).
    """
    if migrate:
        upgrade(engine)
    try:
        with engine.connect() as connection:
            if engine.dialect.name != "postgresql":
                return ""
            oid = connection.execute(
                sa.text("SELECT oid FROM pg_database WHERE datname = current_database()")
            ).scalar_one()
            return str(oid)
    except SQLAlchemyError as error:
        raise storage_error("connect to", engine, error) from error
