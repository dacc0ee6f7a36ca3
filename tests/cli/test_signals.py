"""Real `budgetflow run` processes: stopped by SIGINT or SIGTERM, killed by SIGKILL, started together."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from budgetflow.cli import main
from storage import get_run, list_runs, make_engine
from storage.migrate import current_revision, head_revision, upgrade
from tests.cli.conftest import EXAMPLES, capture

ROOT = EXAMPLES.parent
_WAIT_S = 60.0


class _Budgetflow:
    """`python -m budgetflow ...` in its own process, its output read line by line."""

    def __init__(self, *argv: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGETFLOW_", "OPENAI_", "UV"))}
        env |= {"PYTHONUNBUFFERED": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "COLUMNS": "80"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "budgetflow", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for_line(self, start: str) -> str:
        deadline = time.monotonic() + _WAIT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                assert self.process.poll() is None, f"exited early: {self.finish()}"
                continue
            self.seen.append(line)
            if line.startswith(start):
                return line
        raise AssertionError(f"no line starting with {start!r} in {_WAIT_S}s: {''.join(self.seen)}")

    def finish(self) -> tuple[int, str, str]:
        """Wait for the exit; the exit code, all of stdout, all of stderr."""
        code = self.process.wait(timeout=_WAIT_S)
        self._reader.join(timeout=_WAIT_S)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.process.stderr is not None and self.process.stdout is not None
        err = self.process.stderr.read()
        self.process.stderr.close()
        self.process.stdout.close()
        return code, "".join(self.seen), err


def _wait_for_attempts(url: str, run_id: str) -> None:
    """Until the run's first attempts are recorded (the recorder flushes every half second)."""
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        try:
            if get_run(url, run_id).attempts:
                return
        except Exception:  # not written yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"run `{run_id}` recorded no attempt in {_WAIT_S}s")


def _start_run(db: str) -> tuple[_Budgetflow, str]:
    cli = _Budgetflow(
        "--db", db, "run", "examples/code_pipeline.py", "--budget", "1", "--deadline", "600", "--no-progress"
    )
    started = cli.wait_for_line("run ")
    run_id = started.split()[1]
    _wait_for_attempts(db, run_id)
    return cli, run_id


@pytest.mark.parametrize(
    ("signum", "code", "said"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_signal_cancels_the_run_records_it_and_prints_the_summary(
    db: str, signum: signal.Signals, code: int, said: str
) -> None:
    cli, run_id = _start_run(db)
    cli.process.send_signal(signum)
    exit_code, out, err = cli.finish()
    assert exit_code == code, out + err
    assert "Traceback" not in err and "Traceback" not in out
    assert f"{said}: stopping the run" in out
    assert "outcome      cancelled" in out and f"runs show {run_id}" in out
    detail = get_run(db, run_id)
    assert detail.run.outcome.value == "cancelled" and detail.run.ended_at is not None
    assert [a.attempt_id for a in detail.attempts if a.status.value == "running"] == []
    assert detail.run.spent_usd == sum((c.cost_usd for c in detail.calls), start=detail.run.overrun_usd * 0)


def test_a_killed_run_reads_as_abandoned_and_is_closed_with_its_proven_spend(db: str) -> None:
    cli, run_id = _start_run(db)
    cli.process.kill()
    cli.finish()
    assert get_run(db, run_id).run.outcome.value == "running"  # nothing finished it
    engine = make_engine(db)
    with engine.begin() as connection:  # as if the process had died two minutes ago
        connection.execute(
            sa.text("UPDATE runs SET heartbeat_at = :at WHERE run_id = :id"),
            {"at": datetime.now(UTC) - timedelta(minutes=2), "id": run_id},
        )
    engine.dispose()
    proven = sum((c.cost_usd for c in get_run(db, run_id).calls), start=get_run(db, run_id).run.spent_usd * 0)
    assert [r.outcome.value for r in list_runs(db)] == ["abandoned"]

    console, out = capture(width=80)
    assert main(["--db", db, "runs", "list"], console=console) == 0
    assert "abandoned" in out.getvalue() and run_id in out.getvalue()
    console, out = capture(width=80)
    assert main(["--db", db, "runs", "mark-abandoned", run_id[:6]], console=console) == 0
    closed = out.getvalue()
    assert run_id in closed and f"{proven:.6f}" in closed
    detail = get_run(db, run_id)
    assert detail.run.outcome.value == "abandoned" and detail.run.spent_usd == proven
    assert all(a.status.value != "running" for a in detail.attempts)


def test_first_runs_started_together_on_a_fresh_file_both_complete(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'fresh' / 'runs.db'}"
    argv = ["--db", db, "run", "examples/research_qa.py", "--time-scale", "0.01", "--no-progress"]
    runs = [_Budgetflow(*argv, "--policy", "always_cheapest", "--seed", str(seed)) for seed in (1, 2)]
    results = [cli.finish() for cli in runs]
    for code, out, err in results:
        assert code == 0, out + err
        assert "already exists" not in out + err
    assert len(list_runs(db)) == 2


def _upgrade(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    upgrade(url)


def test_migrations_of_one_sqlite_file_take_turns(tmp_path: Path) -> None:
    # Without the lock, most of the racers fail with `table alembic_version already exists`.
    context = multiprocessing.get_context("spawn")
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    barrier = context.Barrier(4)
    workers = [context.Process(target=_upgrade, args=(url, barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=_WAIT_S)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert current_revision(url) == head_revision()
