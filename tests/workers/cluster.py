"""A cluster of real `budgetflow worker` processes on PostgreSQL and Redis, for the fault suite and the
worker benchmark: start, kill, pause and restart workers, enqueue runs, wait for them, check the promises.

Runs are `tests.workers.load_workflow` runs enqueued straight on DBOS (what the API's
`DurableRunQueue.submit` does). Every worker runs in `root`, so the agents' reply log
(`load_workflow.CALLS_LOG`) is one file for the whole cluster. `check_load` asserts, after the
load, what the issue's fault suite asks for; see its docstring.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import redis
import sqlalchemy as sa

from budgetflow.settings import Settings
from budgetflow.worker import APP_NAME, QUEUE_NAME, WORKFLOW_NAME, RunPayload, migrate_dbos
from orchestrator.ledger import usd_to_nano
from orchestrator.records import CallKind, CallStatus, Outcome
from storage import make_engine
from storage.migrate import upgrade
from storage.queries import RunDetail, get_run
from storage.redis_keys import ledger_totals_key
from tests.promises.invariants import check_promises
from tests.workers.load_workflow import CALLS_LOG

__all__ = ["Cluster", "LoadReport", "Reply", "check_load", "dbos_rows", "read_replies"]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_MODULE = "tests.workers.load_workflow"
FINAL = {"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}
"""DBOS workflow statuses that are final."""


@dataclass
class Cluster:
    """Workers on one database and one Redis, each a process started here and stopped by its PID."""

    root: Path
    """The workers' working directory (their logs and the reply log)."""
    database_url: str
    """The runs' database (DBOS's tables in its `dbos` schema)."""
    redis_url: str | None
    """The run ledgers' Redis; `None`: in-process ledgers."""
    time_scale: float = 0.02
    """Speed of simulated latencies."""
    heartbeat_s: float = 0.5
    takeover_after_s: float = 3.0
    concurrency: int = 4
    team: str | None = None
    """The workers' team (`BUDGETFLOW_TEAM`): the `team:` shared budgets above their runs."""
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """Executor id -> process, every worker ever started."""
    _started: int = 0

    def prepare(self) -> None:
        """Create the runs' tables and DBOS's (before any worker or enqueue)."""
        engine = make_engine(self.database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        migrate_dbos(Settings(database_url=self.database_url))

    def start_worker(
        self,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        takeover_after_s: float | None = None,
    ) -> str:
        """Start a worker (a new executor id each time); its own URLs when given (through a proxy)."""
        executor = f"worker-{self._started}"
        self._started += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGETFLOW_", "OPENAI_", "OTEL_"))}
        env["PYTHONPATH"] = str(ROOT)
        redis_url = redis_url or self.redis_url
        if redis_url:
            env["BUDGETFLOW_REDIS_URL"] = redis_url
        if self.team:
            env["BUDGETFLOW_TEAM"] = self.team
        argv = [sys.executable, "-m", "budgetflow", "worker", "--db", database_url or self.database_url]
        argv += ["--workflow", WORKFLOW_MODULE, "--executor-id", executor, "--no-learn"]
        argv += ["--time-scale", str(self.time_scale), "--heartbeat", str(self.heartbeat_s)]
        argv += ["--takeover-after", str(takeover_after_s or self.takeover_after_s)]
        argv += ["--concurrency", str(self.concurrency)]
        with (self.root / f"{executor}.log").open("wb") as log:
            self.workers[executor] = subprocess.Popen(
                argv, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return executor

    def live(self) -> list[str]:
        """Executor ids of the workers still running (in start order)."""
        return [e for e, p in self.workers.items() if p.poll() is None]

    def kill(self, executor: str) -> None:
        """SIGKILL a worker and reap it."""
        process = self.workers[executor]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def log(self, executor: str) -> str:
        """What a worker printed."""
        return (self.root / f"{executor}.log").read_text(errors="replace")

    def report(self, executors: Sequence[str], tail_chars: int = 2000) -> str:
        """Each worker's state and the end of its log, for a failure message."""
        parts = []
        for executor in executors:
            code = self.workers[executor].poll()
            state = "running" if code is None else f"exited {code}"
            parts.append(f"--- {executor} ({state}):\n{self.log(executor)[-tail_chars:]}")
        return "\n".join(parts)

    def replies(self) -> list[Reply]:
        """The agents' reply log so far."""
        return read_replies(self.root)

    def resumes(self) -> int:
        """Runs resumed from their record by a worker (an earlier execution had recorded them)."""
        return sum(self.log(e).count("resuming it") for e in self.workers)

    def holding(self, executor: str, run_ids: Sequence[str]) -> list[str]:
        """The runs DBOS has `PENDING` on `executor` that already received a reply there."""
        pid = self.workers[executor].pid
        replied = {r.run for r in read_replies(self.root) if r.pid == pid}
        return [
            r
            for r, (s, e) in self.statuses(run_ids).items()
            if e == executor and s == "PENDING" and r in replied
        ]

    def wait_beating(self, executors: Iterable[str], timeout_s: float = 120.0) -> None:
        """Until each of `executors` wrote its heartbeat."""
        wanted = set(executors)
        self._wait_for(sorted(wanted), "to beat", lambda: wanted <= set(self.beats()), timeout_s)

    def wait_ready(self, executors: Iterable[str], timeout_s: float = 60.0) -> None:
        """Until each of `executors` takes runs (it beats before it loads the planner and litellm)."""
        wanted = sorted(set(executors))
        self._wait_for(
            wanted,
            "to take runs",
            lambda: all("executing runs of queue" in self.log(e) for e in wanted),
            timeout_s,
        )

    def _wait_for(self, executors: list[str], what: str, check: Callable[[], bool], timeout_s: float) -> None:
        """`wait_until` on workers; a timeout says each one's state and the end of its log."""
        try:
            wait_until(f"workers {executors} {what}", check, timeout_s)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.report(executors)}") from None

    def beats(self) -> dict[str, float]:
        """Executor id -> its last heartbeat (epoch seconds, the database's clock)."""
        rows = self._query("SELECT executor_id, beat_at FROM dbos.budgetflow_workers")
        return {str(row[0]): float(str(row[1])) for row in rows}

    def enqueue(self, run_ids: Sequence[str], *, seed: int = 0, policy: str = "mcpp") -> None:
        """Enqueue one `load` run per id (seeds `seed`, `seed + 1`, ...)."""
        from dbos import DBOSClient

        client = DBOSClient(system_database_url=self.database_url, application_name=APP_NAME)
        try:
            for i, run_id in enumerate(run_ids):
                payload = RunPayload(
                    workflow="load",
                    run_id=run_id,
                    inputs={"topic": "parsing CSV"},
                    budget_usd="0.05",
                    deadline_s=600.0,
                    policy=policy,
                    seed=seed + i,
                )
                client.enqueue(
                    {"workflow_name": WORKFLOW_NAME, "queue_name": QUEUE_NAME, "workflow_id": run_id}, payload
                )
        finally:
            client.destroy()

    def statuses(self, run_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """DBOS's view: run id -> (status, executor id)."""
        rows = dbos_rows(self.database_url)
        return {r: (rows[r].status, rows[r].executor) for r in run_ids if r in rows}

    def wait_final(self, run_ids: Sequence[str], timeout_s: float) -> None:
        """Until every run's DBOS workflow and record are final."""

        def done() -> bool:
            states = self.statuses(run_ids)
            return len(states) == len(run_ids) and all(s in FINAL for s, _ in states.values())

        wait_until(f"{len(run_ids)} runs to end", done, timeout_s, every_s=0.5)

    def close(self) -> None:
        """Stop every worker still running (SIGTERM, SIGKILL after 30 s)."""
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.workers.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _query(self, sql: str) -> list[tuple[object, ...]]:
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as c:
                return [tuple(row) for row in c.execute(sa.text(sql)).all()]
        finally:
            engine.dispose()


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> None:
    """Poll `check` until it holds; raise `AssertionError` naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except sa.exc.DBAPIError:
            pass  # the database is restarting, or a worker has not created its tables yet
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


@dataclass(frozen=True)
class DbosRow:
    """A run's DBOS workflow."""

    status: str
    executor: str | None
    dispatches: int
    """`recovery_attempts`: how many times it was dispatched."""
    created_s: float
    """When it was enqueued (epoch seconds)."""


def dbos_rows(database_url: str) -> dict[str, DbosRow]:
    """Every DBOS workflow: run id -> row."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as c:
            rows = c.execute(
                sa.text(
                    "SELECT workflow_uuid, status, executor_id, recovery_attempts, created_at"
                    " FROM dbos.workflow_status"
                )
            ).all()
    finally:
        engine.dispose()
    return {r[0]: DbosRow(r[1], r[2], int(r[3] or 0), int(r[4]) / 1000) for r in rows}


@dataclass(frozen=True)
class Reply:
    """One line of the agents' reply log: a call that delivered its reply."""

    run: str
    attempt: str
    subtask: str
    pid: int
    start: float
    end: float


def read_replies(root: Path) -> list[Reply]:
    """The reply log of a cluster in `root`."""
    path = root / CALLS_LOG
    if not path.exists():
        return []
    return [Reply(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class LoadReport:
    """What `check_load` found."""

    runs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    """LLM calls recorded."""
    replies: int = 0
    """Replies the agents received (the reply log)."""
    lost_in_crash: int = 0
    """Calls in flight at a crash, kept at their reservation."""
    resumed: int = 0
    """Runs dispatched more than once."""
    max_dispatches: int = 0
    executions: int = 0
    """(run, worker process) pairs that made calls."""
    spent_usd: Decimal = Decimal(0)
    details: dict[str, RunDetail] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.runs} runs {self.outcomes}; {self.calls} calls recorded, {self.replies} replies logged,"
            f" {self.lost_in_crash} lost_in_crash; {self.resumed} runs dispatched again"
            f" (at most {self.max_dispatches}); {self.executions} (run, process) executions;"
            f" spent ${self.spent_usd}"
        )


def check_load(
    database_url: str,
    redis_url: str | None,
    run_ids: Sequence[str],
    root: Path,
    *,
    paused: Mapping[int, float] | None = None,
) -> LoadReport:
    """Assert the fault suite's promises over `run_ids`, once every one has ended.

    - Every run has a final outcome: DBOS `SUCCESS`, the record not `running`, no attempt
      left running, no call left `in_flight` (`tests.promises.invariants.check_promises`).
    - 0 lost call records: every reply an agent received (the reply log) belongs to an
      attempt with a recorded call that is `ok`, or `lost_in_crash` when its worker died
      (or was fenced) before recording it.
    - 0 attempts paid twice: per run, the recorded calls' costs are its spend plus overrun,
      and the Redis ledger's spend plus overrun is the same, nothing still reserved.
    - No run executed by two workers at once: per run, the replies of each worker process
      span an interval of time, and the intervals of two processes never overlap. `paused`
      (pid -> when it was stopped or cut off, epoch seconds) names processes that lost their
      runs while they could not act: their replies count up to the last call they started
      before that moment (a call in flight then may be delivered later; its record was
      dropped by the fence and the run's next worker kept it `lost_in_crash`).
    """
    report = LoadReport(runs=len(run_ids))
    rows = dbos_rows(database_url)
    replies = read_replies(root)
    by_run: dict[str, list[Reply]] = defaultdict(list)
    for reply in replies:
        by_run[reply.run].append(reply)
    engine = make_engine(database_url)
    client = None if redis_url is None else redis.Redis.from_url(redis_url)
    outcomes: dict[str, int] = defaultdict(int)
    try:
        for run_id in run_ids:
            row = rows.get(run_id)
            assert row is not None and row.status == "SUCCESS", (run_id, row)
            report.max_dispatches = max(report.max_dispatches, row.dispatches)
            report.resumed += row.dispatches > 1
            detail = get_run(engine, run_id)
            report.details[run_id] = detail
            run = detail.run
            assert run.outcome not in (Outcome.RUNNING, Outcome.ABANDONED), (run_id, run.outcome)
            outcomes[run.outcome.value] += 1
            check_promises(run, subtasks=detail.subtasks, attempts=detail.attempts, calls=detail.calls)
            in_flight = [c.call_id for c in detail.calls if c.status is CallStatus.IN_FLIGHT]
            assert in_flight == [], (run_id, in_flight)
            report.calls += sum(c.kind is CallKind.LLM for c in detail.calls)
            report.lost_in_crash += sum(c.status is CallStatus.LOST_IN_CRASH for c in detail.calls)
            report.spent_usd += run.spent_usd

            kept = {CallStatus.OK, CallStatus.LOST_IN_CRASH}
            attempts_with_call = {c.attempt_id for c in detail.calls if c.status in kept}
            run_replies = by_run.get(run_id, [])
            report.replies += len(run_replies)
            lost = [r for r in run_replies if r.attempt not in attempts_with_call]
            assert lost == [], f"run {run_id}: replies received but no call recorded: {lost}"

            billed = sum((c.cost_usd for c in detail.calls), Decimal(0))
            if client is not None:
                raw = client.hmget(ledger_totals_key(run_id), ["spent", "reserved", "overrun"])
                assert raw[0] is not None, f"run {run_id} has no Redis ledger"
                spent, reserved, overrun = (int(v or 0) for v in raw)
                assert reserved == 0, (run_id, reserved)
                assert spent + overrun == usd_to_nano(billed), (run_id, spent, overrun, billed)
                assert spent == usd_to_nano(run.spent_usd), (run_id, spent, run.spent_usd)

            spans: dict[int, tuple[float, float]] = {}
            for reply in run_replies:
                stopped = (paused or {}).get(reply.pid)
                if stopped is not None:
                    assert reply.start <= stopped, (
                        f"run {run_id}: process {reply.pid} started a call at {reply.start:.3f}, after it"
                        f" lost the run at {stopped:.3f}"
                    )
                    continue
                lo, hi = spans.get(reply.pid, (reply.start, reply.end))
                spans[reply.pid] = (min(lo, reply.start), max(hi, reply.end))
            report.executions += len(spans)
            ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
            for (pid_a, (_, end_a)), (pid_b, (start_b, _)) in itertools.pairwise(ordered):
                assert start_b >= end_a, (
                    f"run {run_id} was executed by processes {pid_a} and {pid_b} at once"
                    f" ({pid_a} until {end_a:.3f}, {pid_b} from {start_b:.3f})"
                )
    finally:
        engine.dispose()
        if client is not None:
            client.close()
    report.outcomes = dict(outcomes)
    return report
