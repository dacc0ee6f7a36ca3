"""`budgetflow worker`: executes the runs the HTTP API enqueued on DBOS, and takes over dead workers' runs.

Any number of workers, on any machines that reach the database (and Redis for a shared
ledger), share one DBOS queue (`QUEUE_NAME`) in DBOS's system database (`dbos_url`).
DBOS owns dispatch: each worker dequeues at most `concurrency` runs at once (and the
queue at most `global_concurrency` across workers). A run is one DBOS workflow with one
step, whose id is the run's id; the step executes the budgetflow run with the services
`budgetflow run` uses. DBOS never replays a run (the planner reacts to timing): a
workflow dispatched again after a crash finds its run recorded and resumes it from its
calling tree (`storage.resume.resume_point` and `arun(resume=...)`), so completed
subtasks and finished calls are kept and paid once.

Liveness: DBOS 3.4 recovers a dead executor's workflows only when asked
(`recover_pending_workflows(executor_ids)`; Conductor does the asking, and it is not used
here). So each worker writes a heartbeat (`budgetflow_workers` in DBOS's system database,
on the database's clock) every `heartbeat_s`, and every worker looks for executors that
hold `PENDING` workflows of the queue while their heartbeat is `takeover_after_s` older
than the newest one (or missing): DBOS then puts those workflows back on their queue,
where any live worker dequeues them (DBOS's claim admits exactly one).

Fencing: a worker that stopped (SIGSTOP, a long pause, a lost network) and comes back
must not touch a run another worker now executes. Each run's recorder goes through
`FencedRecorder`, which checks before writing that this execution still owns the
workflow (DBOS row `PENDING` or `CANCELLED` on this executor, and no newer execution of
it here); a run that lost it stops at once and writes nothing more. With Redis, the
taking worker restores the run's ledger under a new epoch, so the old worker's holds and
settles are refused by Redis itself. DBOS fences its own checkpoints (its owner tokens).

Cancel: the API cancels the DBOS workflow; the executing worker sees it within
`watch_s` and sets the run's cancel event (in-flight calls are cancelled and settled,
the run is recorded `cancelled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NotRequired, TypedDict

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from budgetflow.services import ServedMetrics, open_metrics
from budgetflow.settings import Settings
from orchestrator.catalog import Catalog
from orchestrator.errors import ConfigError
from orchestrator.events import Observer
from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    Outcome,
    Recorder,
    RunRecord,
    SubtaskRecord,
)

if TYPE_CHECKING:
    from dbos import DBOS, DBOSClient

    from orchestrator.resume import ResumePoint
    from web.api.registry import WorkflowRegistry

__all__ = [
    "APP_NAME",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_TAKEOVER_AFTER_S",
    "DEFAULT_WATCH_S",
    "QUEUE_NAME",
    "WORKFLOW_NAME",
    "FencedRecorder",
    "RunPayload",
    "Worker",
    "WorkerOptions",
    "dbos_url",
    "migrate_dbos",
]

_log = logging.getLogger(__name__)

_RELAY_DRAIN_S: Final = 5.0
"""After a run, how long its relay may take to deliver the last events (the API's followers
wait for `RunFinished`)."""

APP_NAME: Final = "budgetflow"
"""DBOS application name of the API's client and the workers."""
QUEUE_NAME: Final = "budgetflow_runs"
"""The DBOS queue runs wait on."""
WORKFLOW_NAME: Final = "budgetflow.run"
"""The registered DBOS workflow that executes one run."""
DEFAULT_HEARTBEAT_S: Final = 2.0
"""How often a worker writes its heartbeat and looks for dead workers."""
DEFAULT_TAKEOVER_AFTER_S: Final = 15.0
"""A worker whose heartbeat is this much older than the newest one is dead; its runs are taken over.

Seven missed heartbeats: a loaded machine, a GC pause or a slow database write does not
make a live worker look dead (and a false takeover is safe, only wasteful: the old worker
is fenced), while a dead worker's runs continue elsewhere within about 20 s, small next to
deadlines of minutes. Measured against the newest heartbeat, not the clock, so a database
outage that stops every worker's heartbeat takes nobody's runs."""
DEFAULT_WATCH_S: Final = 0.5
"""How often a run's worker checks its DBOS workflow (cancelled; taken over)."""

_ALIVE = ("PENDING", "CANCELLED")


class RunPayload(TypedDict):
    """A run order as the DBOS workflow's argument: plain JSON."""

    workflow: str
    """The registered workflow's name."""
    run_id: str
    """The run's id (also the DBOS workflow's id)."""
    inputs: dict[str, Any]
    """Run inputs."""
    budget_usd: str
    """Hard budget, as an exact decimal string."""
    deadline_s: float | None
    """Deadline in seconds; `None`: none."""
    policy: str
    """Policy name."""
    seed: int
    """Seed."""
    explore: NotRequired[bool]
    """Plan on the beliefs drawn once from their uncertainty, seeded by `seed` (absent: `False`)."""
    api_token_id: NotRequired[int | None]
    """The API token that submitted it (shared budgets per token are above it)."""


def dbos_url(settings: Settings) -> str:
    """DBOS's system database: `dbos_database_url`, else the runs' PostgreSQL database, else a SQLite file
    beside the runs' one (`runs.db` -> `runs.dbos.db`)."""
    if settings.dbos_database_url:
        return settings.dbos_database_url
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError(
                "workers need a database that several processes can open; `database_url` is an"
                " in-memory SQLite database: use a file or PostgreSQL"
            )
        path = Path(url.database)
        return f"sqlite:///{path.with_name(path.stem + '.dbos' + (path.suffix or '.db'))}"
    return settings.database_url


def migrate_dbos(settings: Settings) -> str:
    """Create or migrate DBOS's system database (a `DBOSClient` never does) and the workers'
    heartbeats table in it; return its URL."""
    from dbos import DBOS

    from storage._engine import ensure_sqlite_dir

    url = dbos_url(settings)
    ensure_sqlite_dir(url)
    DBOS.migrate(url)
    engine = sa.create_engine(url)
    try:
        _create_beats_table(engine, _beats_table(url))
    finally:
        engine.dispose()
    return url


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """How a worker runs."""

    concurrency: int = 4
    """Runs this worker executes at once."""
    global_concurrency: int | None = None
    """Runs executing at once across all workers; `None`: no limit."""
    executor_id: str | None = None
    """This worker's DBOS executor id; `None`: `host-pid-random` (a restart is a new worker)."""
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    """How often to write the heartbeat and look for dead workers."""
    takeover_after_s: float = DEFAULT_TAKEOVER_AFTER_S
    """How far behind the newest heartbeat a worker's may fall before its runs are taken over."""
    watch_s: float = DEFAULT_WATCH_S
    """How often a run checks its DBOS workflow (cancelled, taken over)."""
    poll_s: float = 1.0
    """How often DBOS looks at the queue for runs to dequeue."""
    sim_time_scale: float = 1.0
    """Speed of the simulated backend's latencies."""
    learn: bool = True
    """Plan from estimates learned from recorded runs."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"`--concurrency` must be at least 1, got {self.concurrency}")
        if self.global_concurrency is not None and self.global_concurrency < 1:
            raise ConfigError(f"`--global-concurrency` must be at least 1, got {self.global_concurrency}")
        for name in ("heartbeat_s", "watch_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"`{name}` must be a positive number of seconds, got {getattr(self, name)}")
        if not self.takeover_after_s > 2 * self.heartbeat_s:
            raise ConfigError(
                f"`--takeover-after` ({self.takeover_after_s:g} s) must exceed two heartbeats"
                f" ({2 * self.heartbeat_s:g} s), or live workers would look dead"
            )


@dataclass(eq=False)
class _Execution:
    """One execution of a run on this worker (on DBOS's event loop, `loop`)."""

    run_id: str
    loop: asyncio.AbstractEventLoop
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    fenced: bool = False
    """It lost the run (taken over, or a newer execution here): it writes nothing more."""
    checked_at: float = 0.0
    """When its ownership was last confirmed (monotonic, so a pause counts)."""
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    """Its fencing token in the runs database (`runs.owner`): once another execution claims
    the run, this one's recorder refuses every write in the write's own transaction."""

    def fence(self, why: str) -> None:
        if not self.fenced:
            _log.warning("run %s: %s; this execution stops and records nothing more", self.run_id, why)
        self.fenced = True
        self.stop()

    def stop(self) -> None:
        """Set the cancel event, from any thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.cancel.set()
        else:
            self.loop.call_soon_threadsafe(self.cancel.set)


class FencedRecorder:
    """A recorder that writes only while its execution still owns the run.

    Before each write, unless ownership was confirmed less than `watch_s` ago (on the
    monotonic clock, which keeps counting while a process is stopped), it asks DBOS
    whether the workflow is still this executor's; a fenced execution drops every write.
    """

    def __init__(self, inner: Recorder, worker: Worker, execution: _Execution) -> None:
        self._inner = inner
        self._worker = worker
        self._execution = execution

    async def _owned(self) -> bool:
        ex = self._execution
        if ex.fenced:
            return False
        if time.monotonic() - ex.checked_at >= self._worker.options.watch_s:
            await self._worker.check(ex)
        return not ex.fenced

    async def run_started(self, run: RunRecord) -> None:
        if await self._owned():
            await self._inner.run_started(run)

    async def decision_made(self, decision: DecisionRecord) -> None:
        if await self._owned():
            await self._inner.decision_made(decision)

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        if await self._owned():
            await self._inner.attempt_started(attempt)

    async def call_started(self, call: CallRecord) -> None:
        if await self._owned():
            await self._inner.call_started(call)

    async def call_finished(self, call: CallRecord) -> None:
        if await self._owned():
            await self._inner.call_finished(call)

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        if await self._owned():
            await self._inner.attempt_finished(attempt)

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        if await self._owned():
            await self._inner.subtask_changed(subtask)

    async def run_finished(self, run: RunRecord) -> None:
        if await self._owned():
            await self._inner.run_finished(run)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _beats_table(url: str) -> sa.Table:
    schema = None if make_url(url).get_backend_name() == "sqlite" else "dbos"
    return sa.Table(
        "budgetflow_workers",
        sa.MetaData(schema=schema),
        sa.Column("executor_id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("beat_at", sa.Float, nullable=False),
    )


def _create_beats_table(engine: sa.Engine, beats: sa.Table) -> None:
    """Create the heartbeats table unless it exists. Workers starting together may race to create
    it (PostgreSQL's `CREATE TABLE` is not atomic with the check): the loser finds it made."""
    try:
        beats.metadata.create_all(engine)
    except sa.exc.DBAPIError:
        if not sa.inspect(engine).has_table(beats.name, schema=beats.schema):
            raise


def _db_now(engine: sa.Engine) -> sa.ColumnElement[float]:
    """The database's clock in epoch seconds (one clock for all workers, whatever theirs say)."""
    if engine.dialect.name == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)", sa.Float)
    return sa.literal_column("extract(epoch from clock_timestamp())", sa.Float)


class Worker:
    """A `budgetflow worker` process: DBOS launched with the run workflow and the queue, heartbeats,
    takeover of dead workers' runs."""

    def __init__(
        self, settings: Settings, options: WorkerOptions, *, registry: WorkflowRegistry | None = None
    ) -> None:
        """A worker on `settings` (database, Redis, registered workflows `api_workflows`)."""
        from web.api.registry import WorkflowRegistry

        self.settings = settings
        self.options = options
        self.registry = (
            WorkflowRegistry.from_modules(settings.api_workflows, settings) if registry is None else registry
        )
        self.executor_id = options.executor_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.dbos_url = dbos_url(settings)
        self._active: dict[str, _Execution] = {}
        self._client: DBOSClient | None = None
        self._beats = _beats_table(self.dbos_url)
        self._sys_engine: sa.Engine | None = None
        self.taken_over: list[str] = []
        """Executor ids whose runs this worker put back on the queue."""
        self._relay: Any = None
        self._runs_loop: asyncio.AbstractEventLoop | None = None
        """The event loop DBOS executes runs on (not the worker's own): the relay's connections live there."""
        self._metrics: ServedMetrics | None = None

    def _observers(self, run_id: str, catalog: Catalog) -> list[Observer]:
        """What watches a run here: its events relayed to Redis for the API (`web.api.relay`),
        and this worker's Prometheus metrics when it serves them."""
        observers: list[Observer] = []
        if self._relay is not None:
            from web.api.relay import RelayObserver

            observers.append(RelayObserver(self._relay, run_id, with_content=self.settings.record_content))
        if self._metrics is not None:
            observers.append(self._metrics.metrics.observer(catalog=catalog))
        return observers

    async def run(self, stop: asyncio.Event) -> None:
        """Execute runs until `stop` is set; then hand the runs still going back to the queue.

        Raises:
            ConfigError: no workflow is registered, or a setting is invalid.
        """
        if not len(self.registry):
            raise ConfigError(
                "this worker has no workflows to run; register them with `--workflow MODULE` or"
                " `BUDGETFLOW_API_WORKFLOWS`, as the API's"
            )
        from dbos import DBOS, DBOSClient

        from storage import make_engine
        from storage._engine import ensure_sqlite_dir
        from storage.migrate import upgrade

        ensure_sqlite_dir(self.settings.database_url)
        runs_engine = make_engine(self.settings.database_url)
        await asyncio.to_thread(upgrade, runs_engine)
        await asyncio.to_thread(runs_engine.dispose)
        await asyncio.to_thread(migrate_dbos, self.settings)
        self._sys_engine = sa.create_engine(self.dbos_url)
        await asyncio.to_thread(self._beat)  # before dequeuing anything: a worker without one is dead
        await self._warm_up()
        DBOS(
            config={
                "name": APP_NAME,
                "system_database_url": self.dbos_url,
                "executor_id": self.executor_id,
                "log_level": "WARNING",
            }
        )
        self._register(DBOS)
        metrics = open_metrics(self.settings)
        try:
            self._metrics = await metrics.__aenter__()
            if self._metrics is not None:
                _log.info("metrics: %s", self._metrics.server.url)
            if self.settings.redis_url:
                from redis.asyncio import Redis

                self._relay = Redis.from_url(self.settings.redis_url)
            await asyncio.to_thread(DBOS.launch)
            await DBOS.register_queue_async(
                QUEUE_NAME,
                worker_concurrency=self.options.concurrency,
                global_concurrency=self.options.global_concurrency,
                polling_interval_sec=self.options.poll_s,
            )
            self._client = await asyncio.to_thread(
                DBOSClient, system_database_url=self.dbos_url, application_name=APP_NAME
            )
            _log.info("worker %s executing runs of queue %s", self.executor_id, QUEUE_NAME)
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self._beat)
                    await self._take_over()
                except Exception:  # a database hiccup must not stop the worker
                    _log.exception("heartbeat or takeover failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.heartbeat_s)
        finally:
            await self._hand_back()
            if self._client is not None:
                await asyncio.to_thread(self._client.destroy)
            await asyncio.to_thread(self._sys_engine.dispose)
            if self._relay is not None:
                await self._close_relay()
            await metrics.__aexit__(None, None, None)
            # Last: DBOS shuts down the thread pool it gave this event loop.
            DBOS.destroy(destroy_registry=True)

    async def _warm_up(self) -> None:
        """Pay the process's one-time costs before taking runs: the planner's modules (numpy, numba's
        compiled kernels), litellm and the tokenizers of every registered workflow's models.

        Otherwise the first runs a worker dequeues wait for them (~12 s on two cores), and with
        them every run queued behind; a run's clock would not count it, but the queue does. The
        worker has beaten once; it holds no run yet, so a takeover meanwhile would take nothing."""
        from budgetflow.services import default_client, resolve_policy
        from orchestrator.run import arun  # noqa: F401  (imported for its import cost)

        started = time.monotonic()
        await asyncio.to_thread(resolve_policy, "mcpp", 0)
        for registered in self.registry:
            client = default_client(registered.workflow, registered.catalog, pools={})
            try:
                await client.prepare()
            finally:
                await client.aclose()
        _log.info("ready in %.1f s (planner, litellm and tokenizers loaded)", time.monotonic() - started)

    def _register(self, dbos: type[DBOS]) -> None:
        worker = self

        @dbos.step(name="budgetflow.execute")
        async def execute(payload: RunPayload) -> str:
            return await worker._execute(payload)

        @dbos.workflow(name=WORKFLOW_NAME)
        async def run_workflow(payload: RunPayload) -> str:
            outcome: str = await execute(payload)
            return outcome

    def _beat(self) -> None:
        assert self._sys_engine is not None
        beats = self._beats
        with self._sys_engine.begin() as c:
            now = c.execute(sa.select(_db_now(self._sys_engine))).scalar_one()
            updated = c.execute(
                beats.update().where(beats.c.executor_id == self.executor_id).values(beat_at=now)
            )
            if updated.rowcount == 0:
                c.execute(
                    beats.insert().values(
                        executor_id=self.executor_id, host=socket.gethostname(), pid=os.getpid(), beat_at=now
                    )
                )

    def _beat_times(self) -> dict[str, float]:
        assert self._sys_engine is not None
        with self._sys_engine.connect() as c:
            rows = c.execute(sa.select(self._beats.c.executor_id, self._beats.c.beat_at)).all()
        return {executor: float(beat) for executor, beat in rows}

    async def _take_over(self) -> None:
        """Put the runs of dead workers back on the queue (DBOS recovery by executor id)."""
        from dbos import DBOS

        assert self._client is not None
        pending = await self._client.list_workflows_async(
            status="PENDING", queue_name=QUEUE_NAME, load_input=False, load_output=False
        )
        holders = {w.executor_id for w in pending if w.executor_id and w.executor_id != self.executor_id}
        if not holders:
            return
        beats = await asyncio.to_thread(self._beat_times)
        newest = max(beats.values(), default=0.0)
        dead = sorted(
            h for h in holders if h not in beats or newest - beats[h] > self.options.takeover_after_s
        )
        if not dead:
            return
        _log.warning("workers %s stopped sending heartbeats; putting their runs back on the queue", dead)
        await asyncio.to_thread(DBOS._recover_pending_workflows, dead)
        self.taken_over.extend(dead)

    async def check(self, execution: _Execution) -> None:
        """Fence `execution` unless its DBOS workflow is still this worker's; set its cancel event when
        the workflow was cancelled."""
        if self._active.get(execution.run_id) is not execution:
            execution.fence("a newer execution of this run started on this worker")
            return
        assert self._client is not None
        found = await self._client.list_workflows_async(
            workflow_ids=[execution.run_id], load_input=False, load_output=False
        )
        status = found[0] if found else None
        if status is None or status.executor_id != self.executor_id or status.status not in _ALIVE:
            where = "gone" if status is None else f"{status.status} on `{status.executor_id}`"
            execution.fence(f"its DBOS workflow is {where}: another worker took it over")
            return
        execution.checked_at = time.monotonic()
        if status.status == "CANCELLED" and not execution.cancel.is_set():
            _log.info("run %s was cancelled; stopping it", execution.run_id)
            execution.stop()

    async def _watch(self, execution: _Execution) -> None:
        while not execution.fenced:
            try:
                await self.check(execution)
            except Exception:
                _log.exception("run %s: cannot read its DBOS workflow; trying again", execution.run_id)
            await asyncio.sleep(self.options.watch_s)

    async def _execute(self, payload: RunPayload) -> str:
        """The DBOS step: start the run, or resume it when an earlier execution recorded it."""
        from budgetflow.services import default_client, open_run_services, pool_callers, resolve_policy
        from orchestrator.run import arun

        run_id = payload["run_id"]
        registered = self.registry.get(payload["workflow"])
        execution = _Execution(run_id, asyncio.get_running_loop())
        self._runs_loop = execution.loop
        older = self._active.get(run_id)
        if older is not None:
            older.fence("a newer execution of this run started on this worker")
        self._active[run_id] = execution
        execution.checked_at = time.monotonic()
        watcher = asyncio.create_task(self._watch(execution), name=f"watch {run_id}")
        try:
            recorded = await asyncio.to_thread(_recorded_outcome, self.settings.database_url, run_id)
            if recorded is not None and recorded is not Outcome.RUNNING:
                return recorded.value  # it ended before its worker could tell DBOS
            budget = Decimal(payload["budget_usd"])
            catalog = registered.catalog
            point: ResumePoint | None = None
            if recorded is not None:
                from storage.resume import resume_point

                _log.warning("run %s was started by a worker that died; resuming it", run_id)
                # The takeover was decided on the workers' heartbeats and the old execution is fenced;
                # the run's own heartbeat (every 5 s) is too slow a signal, and a paused old worker may
                # write one more when it comes back (refused once `owner` is ours).
                point = await asyncio.to_thread(
                    functools.partial(
                        resume_point,
                        self.settings.database_url,
                        run_id,
                        stale_after_s=None,
                        owner=execution.token,
                    )
                )
            async with open_run_services(
                self.settings,
                workflow=registered.workflow,
                catalog=catalog,
                budget_usd=budget,
                run_id=run_id,
                learn=self.options.learn,
                explore_seed=payload["seed"] if payload.get("explore") else None,
                # Not recorded: no call was sent (a call is journaled first, which commits the run's
                # row), so its spend is 0; but an earlier execution that died before that commit may
                # have created the run's Redis ledger, which `create` refuses: restore it at 0 (a new
                # epoch, which also fences that execution if it still lives).
                spent_nano=0 if point is None else point.spent_nano,
                api_token_id=payload.get("api_token_id"),
                owner=execution.token,
            ) as services:
                pools = pool_callers(registered.workflow, catalog)
                client = default_client(
                    registered.workflow,
                    catalog,
                    seed=payload["seed"],
                    sim_time_scale=self.options.sim_time_scale,
                    pools=pools,
                )
                try:
                    result = await arun(
                        registered.workflow,
                        catalog=catalog,
                        client=client,
                        policy=services.wrap_policy(resolve_policy(payload["policy"], payload["seed"])),
                        budget_usd=budget,
                        deadline_s=payload["deadline_s"],
                        inputs=payload["inputs"],
                        seed=payload["seed"],
                        recorder=FencedRecorder(services.recorder, self, execution),
                        ledger=services.ledger,
                        observers=self._observers(run_id, catalog),
                        observer_drain_s=_RELAY_DRAIN_S,
                        interceptors=services.interceptors,
                        record_content=self.settings.record_content,
                        estimator=services.estimator,
                        run_id=run_id,
                        cancel=execution.cancel,
                        resume=point,
                    )
                finally:
                    with contextlib.suppress(Exception):
                        await client.aclose()
            return "fenced" if execution.fenced else result.outcome.value
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self._active.get(run_id) is execution:
                del self._active[run_id]

    async def _close_relay(self) -> None:
        """Close the relay's Redis client on the loop its connections were opened on (DBOS's)."""
        loop = self._runs_loop
        if loop is None or loop is asyncio.get_running_loop() or not loop.is_running():
            await self._relay.aclose()
            return
        closing = asyncio.run_coroutine_threadsafe(self._relay.aclose(), loop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(closing), _RELAY_DRAIN_S)
        except Exception:
            _log.warning("the event relay's Redis connections did not close cleanly", exc_info=True)

    async def _hand_back(self) -> None:
        """At shutdown: stop the runs going here without recording them and put them back on the queue."""
        from dbos import DBOS

        for execution in list(self._active.values()):
            execution.fence("this worker is shutting down; another worker continues it")
        if self._sys_engine is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._forget_beat)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(DBOS._recover_pending_workflows, [self.executor_id])

    def _forget_beat(self) -> None:
        assert self._sys_engine is not None
        with self._sys_engine.begin() as c:
            c.execute(self._beats.delete().where(self._beats.c.executor_id == self.executor_id))


def _recorded_outcome(database_url: str, run_id: str) -> Outcome | None:
    """The run's recorded outcome; `None` when it was never recorded."""
    from storage import make_engine
    from storage.models import Run

    engine = make_engine(database_url)
    try:
        with engine.connect() as c:
            value = c.execute(sa.select(Run.outcome).where(Run.run_id == run_id)).scalar_one_or_none()
    finally:
        engine.dispose()
    return None if value is None else Outcome(value)
