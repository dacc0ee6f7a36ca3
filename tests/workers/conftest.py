"""Fixtures of the worker tests: `budgetflow worker` processes on a temporary SQLite database (runs and
DBOS's system database side by side), and the API app enqueuing to them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from budgetflow.settings import Settings
from budgetflow.worker import dbos_url
from orchestrator.records import Outcome
from storage import get_run
from storage.queries import RunDetail
from tests.api.conftest import asgi_client, make_app

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ("tests.api.quick_workflow", "tests.api.slow_workflow", "tests.workers.steps_workflow")
"""The workflows the API and the workers register."""
TIME_SCALE = 0.01
"""Simulated latencies a hundred times faster."""
HEARTBEAT_S = 0.5
TAKEOVER_AFTER_S = 3.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh SQLite file, the API enqueuing to workers."""
    return Settings(database_url=f"sqlite:///{tmp_path / 'runs.db'}", api_workflows=WORKFLOWS, workers=True)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the API app (with the durable queue)."""
    async with asgi_client(make_app(settings)) as client:
        yield client


StartWorker = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[StartWorker]:
    """Start `budgetflow worker` processes; each is stopped (SIGKILL if it must) at the end."""
    started: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGETFLOW_", "OPENAI_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)

    def start(*flags: str, name: str | None = None) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name or f'worker{len(started)}'}.log").open("wb")
        argv = [sys.executable, "-m", "budgetflow", "worker", "--db", settings.database_url]
        for module in WORKFLOWS:
            argv += ["--workflow", module]
        argv += ["--time-scale", str(TIME_SCALE), "--heartbeat", str(HEARTBEAT_S)]
        argv += ["--takeover-after", str(TAKEOVER_AFTER_S), "--no-learn", *flags]
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        started.append(process)
        return process

    yield start
    for log in sorted(tmp_path.glob("*.log")):  # shown by pytest when the test failed
        tail = log.read_text(errors="replace").splitlines()[-40:]
        print(f"---- {log.name} (last 40 lines)\n" + "\n".join(tail))
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 45.0, every_s: float = 0.2) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def recorded(settings: Settings, run_id: str) -> RunDetail | None:
    """The run as recorded, `None` before it is."""
    try:
        return get_run(settings.database_url, run_id)
    except Exception:
        return None


def outcome(settings: Settings, run_id: str) -> Outcome | None:
    detail = recorded(settings, run_id)
    return None if detail is None else detail.run.outcome


def workflow_rows(settings: Settings) -> dict[str, tuple[str, str | None, int]]:
    """DBOS's view of the runs: run id -> (status, executor id, dispatches)."""
    engine = sa.create_engine(dbos_url(settings))
    try:
        with engine.connect() as c:
            rows = c.execute(
                sa.text("SELECT workflow_uuid, status, executor_id, recovery_attempts FROM workflow_status")
            ).all()
    finally:
        engine.dispose()
    return {row[0]: (row[1], row[2], int(row[3] or 0)) for row in rows}


def live_workers(settings: Settings) -> list[str]:
    """Executor ids with a heartbeat row."""
    engine = sa.create_engine(dbos_url(settings))
    try:
        with engine.connect() as c:
            return [r[0] for r in c.execute(sa.text("SELECT executor_id FROM budgetflow_workers")).all()]
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


@contextlib.contextmanager
def paused(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGSTOP `process` for the block, SIGCONT after."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)
