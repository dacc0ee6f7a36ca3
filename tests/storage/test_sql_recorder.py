"""SqlRecorder, migrations and queries on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import storage
from orchestrator.errors import ConfigError, StorageError
from orchestrator.records import (
    AttemptRecord,
    AttemptStatus,
    CallKind,
    CallRecord,
    CallStatus,
    DecisionRecord,
    Outcome,
    Recorder,
    RunRecord,
    SubtaskRecord,
    SubtaskStatus,
)
from storage import SqlRecorder, build_call_tree, get_run, list_runs, make_engine
from storage.migrate import current_revision, head_revision, upgrade
from storage.models import Base
from tests.storage.conftest import errors_when_together

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


@dataclass(frozen=True)
class RunStory:
    """Everything one run sends to a recorder, in the order the executor sends it."""

    started: RunRecord
    decisions: tuple[DecisionRecord, ...]
    attempts_started: tuple[AttemptRecord, ...]
    calls: tuple[CallRecord, ...]
    attempts_finished: tuple[AttemptRecord, ...]
    subtasks: tuple[SubtaskRecord, ...]
    finished: RunRecord


def _call(run_id: str, call_id: str, **fields: object) -> CallRecord:
    base: dict[str, object] = {
        "call_id": call_id,
        "run_id": run_id,
        "attempt_id": None,
        "parent_call_id": None,
        "kind": CallKind.LLM,
        "subtask": "plan",
        "model": "small",
    }
    base.update(fields)
    return CallRecord(**base)  # type: ignore[arg-type]


def make_story(run_id: str, *, started_at: datetime = T0, workflow: str = "fix-bug") -> RunStory:
    """A two-attempt run with a three-level calling tree and awkward money values."""
    started = RunRecord(
        run_id=run_id,
        workflow=workflow,
        policy="mcpp",
        budget_usd=Decimal("0.400000000"),
        deadline_s=90.0,
        seed=7,
        simulated=True,
        started_at=started_at,
        inputs={"issue": "crash on empty input", "files": ["a.py", "b.py"], "n": 3},
    )
    decisions = (
        DecisionRecord(
            run_id=run_id,
            index=0,
            at_s=0.001,
            policy="mcpp",
            state={"ready": ["plan"], "budget_left_usd": "0.4", "time_left_s": 90.0},
            allocation={"plan": {"model": "small", "k": 2, "max_tokens": 256}},
            info={"candidates": [{"model": "small", "p": 0.61}, {"model": "large", "p": 0.83}]},
            decide_ms=1.25,
        ),
        DecisionRecord(
            run_id=run_id,
            index=1,
            at_s=2.5,
            policy="mcpp",
            state={"ready": [], "completed": ["plan"]},
            allocation={},
            info={"reason": "done"},
            decide_ms=0.5,
        ),
    )
    a1 = AttemptRecord(
        attempt_id=f"{run_id}-a1",
        run_id=run_id,
        subtask="plan",
        model="small",
        batch=0,
        sample=0,
        max_tokens=256,
        started_s=0.01,
    )
    a2 = replace(a1, attempt_id=f"{run_id}-a2", sample=1, started_s=0.02)
    c = f"{run_id}-c"
    calls = (
        # Children finish before their parents: the leaf, then the inner agent, ...
        _call(run_id, f"{c}3", attempt_id=a1.attempt_id, parent_call_id=f"{c}2",
              litellm_model="openai/gpt-4o-mini", provider="openai", input_tokens=120,
              output_tokens=80, cached_tokens=64, cost_usd=Decimal("0.000123456"),
              reserved_usd=Decimal("0.000400000"), started_s=0.05, latency_s=0.75, ttft_s=0.125,
              finish_reason="stop", prompt="Plan a fix for: crash", response="1. check input"),
        _call(run_id, f"{c}2", attempt_id=a1.attempt_id, parent_call_id=f"{c}1",
              kind=CallKind.AGENT, cost_usd=Decimal(0), started_s=0.04, latency_s=0.9),
        _call(run_id, f"{c}4", attempt_id=a1.attempt_id, parent_call_id=f"{c}1",
              cost_usd=Decimal("0.100000001"), reserved_usd=Decimal("0.100000001"),
              started_s=1.0, latency_s=0.5, retry=1, replica="replica-0"),
        # ... then the outer agent span, then the check.
        _call(run_id, f"{c}1", attempt_id=a1.attempt_id, kind=CallKind.AGENT,
              cost_usd=Decimal("0.000000001"), started_s=0.03, latency_s=1.6),
        _call(run_id, f"{c}5", attempt_id=a1.attempt_id, kind=CallKind.CHECK, model=None,
              started_s=1.7, latency_s=0.2),
        _call(run_id, f"{c}6", attempt_id=a2.attempt_id, status=CallStatus.CANCELLED,
              error="sibling won", cost_usd=Decimal("0.023456789"), started_s=0.06, latency_s=1.1),
        _call(run_id, f"{c}7", kind=CallKind.WARMUP, subtask=None, model="local",
              cost_usd=Decimal("0.000000002"), started_s=0.0, latency_s=0.01),
    )  # fmt: skip
    finished_attempts = (
        replace(a1, status=AttemptStatus.PASSED, ended_s=1.9, check_passed=True,
                check_detail="3 passed", output_preview="1. check input",
                spent_usd=Decimal("0.100123458")),
        replace(a2, status=AttemptStatus.CANCELLED, ended_s=1.16, spent_usd=Decimal("0.023456789")),
    )  # fmt: skip
    subtasks = (
        SubtaskRecord(run_id=run_id, subtask="plan", status=SubtaskStatus.RUNNING, attempts=2,
                      started_s=0.01),
        SubtaskRecord(run_id=run_id, subtask="plan", status=SubtaskStatus.COMPLETED, attempts=2,
                      winner_attempt_id=a1.attempt_id, output_preview="1. check input",
                      started_s=0.01, ended_s=1.9, spent_usd=Decimal("0.123580247")),
        SubtaskRecord(run_id=run_id, subtask="review", status=SubtaskStatus.CANCELLED),
    )  # fmt: skip
    finished = replace(
        started,
        outcome=Outcome.COMPLETED,
        spent_usd=Decimal("0.123580249"),
        makespan_s=2.5,
        ended_at=started_at + timedelta(seconds=2.5),
    )
    return RunStory(started, decisions, (a1, a2), calls, finished_attempts, subtasks, finished)


async def record(recorder: Recorder, story: RunStory) -> None:
    """Send a story to a recorder in executor order."""
    await recorder.run_started(story.started)
    await recorder.decision_made(story.decisions[0])
    await recorder.subtask_changed(story.subtasks[0])
    for attempt in story.attempts_started:
        await recorder.attempt_started(attempt)
    for call in story.calls:
        await recorder.call_finished(call)
    for attempt in story.attempts_finished:
        await recorder.attempt_finished(attempt)
    for subtask in story.subtasks[1:]:
        await recorder.subtask_changed(subtask)
    await recorder.decision_made(story.decisions[1])
    await recorder.run_finished(story.finished)


def _by_id(calls: Sequence[CallRecord]) -> dict[str, CallRecord]:
    return {call.call_id: call for call in calls}


async def test_round_trip_of_a_whole_run(db_url: str) -> None:
    story = make_story("run-1")
    async with await SqlRecorder.open(db_url) as recorder:
        conforming: Recorder = recorder  # the protocol, checked by mypy
        await record(conforming, story)

    detail = get_run(db_url, "run-1")
    assert detail.run == story.finished
    assert detail.run.started_at.tzinfo is not None
    assert detail.decisions == story.decisions
    assert detail.attempts == story.attempts_finished
    assert detail.subtasks == (story.subtasks[1], story.subtasks[2])
    assert _by_id(detail.calls) == _by_id(story.calls)
    assert [c.started_s for c in detail.calls] == sorted(c.started_s for c in story.calls)
    # Money is exact: nine decimal places, no float on the way.
    leaf = _by_id(detail.calls)["run-1-c3"]
    assert leaf.cost_usd == Decimal("0.000123456")
    assert str(leaf.cost_usd) == "0.000123456"
    assert sum((c.cost_usd for c in detail.calls), Decimal(0)) == detail.run.spent_usd


async def test_call_tree_nests_and_sums(db_url: str) -> None:
    story = make_story("run-tree")
    async with await SqlRecorder.open(db_url) as recorder:
        await record(recorder, story)

    tree = build_call_tree(get_run(db_url, "run-tree"))
    assert tree.run_id == "run-tree"
    assert tree.cost_usd == Decimal("0.123580249")
    first, second = tree.attempts
    assert [n.call.call_id for n in first.calls] == ["run-tree-c1", "run-tree-c5"]
    outer = first.calls[0]
    assert [n.call.call_id for n in outer.children] == ["run-tree-c2", "run-tree-c4"]
    inner = outer.children[0]
    assert [n.call.call_id for n in inner.children] == ["run-tree-c3"]
    assert inner.children[0].children == ()
    assert outer.cost_usd == Decimal("0.000000001")
    assert outer.total_cost_usd == Decimal("0.100123458")
    assert outer.latency_s == 1.6
    assert first.cost_usd == Decimal("0.100123458")
    assert first.latency_s == pytest.approx(1.89)
    assert second.cost_usd == Decimal("0.023456789")
    assert [n.call.call_id for n in tree.run_calls] == ["run-tree-c7"]


def test_call_tree_survives_orphans_and_cycles() -> None:
    story = make_story("r")
    broken = (
        _call("r", "x", attempt_id="r-a1", parent_call_id="missing", started_s=5.0),
        _call("r", "y", attempt_id="r-a1", parent_call_id="z", started_s=6.0),
        _call("r", "z", attempt_id="r-a1", parent_call_id="y", started_s=7.0),
    )
    detail = storage.RunDetail(
        run=story.finished,
        subtasks=(),
        attempts=story.attempts_finished,
        calls=broken,
        decisions=(),
    )
    tree = build_call_tree(detail)
    roots = tree.attempts[0].calls
    assert [n.call.call_id for n in roots] == ["x", "y"]
    assert [n.call.call_id for n in roots[1].children] == ["z"]


async def test_record_content_false_drops_text(db_url: str) -> None:
    story = make_story("run-private")
    async with await SqlRecorder.open(db_url, record_content=False) as recorder:
        await record(recorder, story)

    detail = get_run(db_url, "run-private")
    assert all(c.prompt is None and c.response is None for c in detail.calls)
    assert all(a.output_preview is None for a in detail.attempts)
    assert all(s.output_preview is None for s in detail.subtasks)
    # Everything else is kept.
    assert _by_id(detail.calls)["run-private-c3"].output_tokens == 80
    assert detail.attempts[0].check_detail == "3 passed"


async def test_list_runs_newest_first_with_filter_and_counts(db_url: str) -> None:
    async with await SqlRecorder.open(db_url) as recorder:
        for i, workflow in enumerate(["fix-bug", "summarise", "fix-bug"]):
            story = make_story(f"run-{i}", started_at=T0 + timedelta(minutes=i), workflow=workflow)
            await record(recorder, story)

    runs = list_runs(db_url, limit=10)
    assert [r.run_id for r in runs] == ["run-2", "run-1", "run-0"]
    assert runs[0].calls == 3  # model calls only: agent, check and warm-up spans are not calls
    assert runs[0].outcome is Outcome.COMPLETED
    assert runs[0].spent_usd == Decimal("0.123580249")
    assert runs[0].started_at == T0 + timedelta(minutes=2)
    assert [r.run_id for r in list_runs(db_url, limit=1)] == ["run-2"]
    assert [r.run_id for r in list_runs(db_url, 10, workflow="fix-bug")] == ["run-2", "run-0"]
    assert list_runs(db_url, 10, workflow="nothing") == []


async def test_queued_events_are_flushed_by_aclose(db_url: str) -> None:
    story = make_story("run-q")
    recorder = await SqlRecorder.open(db_url, flush_interval_s=3600)
    await recorder.run_started(story.started)
    await recorder.decision_made(story.decisions[0])
    await recorder.subtask_changed(story.subtasks[2])
    await recorder.aclose()
    await recorder.aclose()  # idempotent

    detail = get_run(db_url, "run-q")
    assert detail.run == story.started
    assert detail.decisions == story.decisions[:1]
    assert detail.subtasks == story.subtasks[2:]
    with pytest.raises(StorageError, match="closed"):
        await recorder.run_started(story.started)


async def test_queued_events_are_flushed_by_the_timer(sqlite_url: str) -> None:
    story = make_story("run-timer")
    async with await SqlRecorder.open(sqlite_url, flush_interval_s=0.02) as recorder:
        await recorder.run_started(story.started)
        deadline = time.monotonic() + 10
        while not list_runs(recorder.engine):
            assert time.monotonic() < deadline, "the timer never flushed"
            await asyncio.sleep(0.01)


async def test_all_database_work_runs_on_the_writer_thread(sqlite_url: str) -> None:
    threads: set[str] = set()
    async with await SqlRecorder.open(sqlite_url, batch_size=2) as recorder:

        def note(*_: object) -> None:
            threads.add(threading.current_thread().name)

        sa.event.listen(recorder.engine, "before_cursor_execute", note)
        await record(recorder, make_story("run-t"))
    assert threads
    assert all(name.startswith("budgetflow-sql-writer") for name in threads), threads


async def test_failed_write_raises_storage_error(db_url: str, tmp_path: Path) -> None:
    story = make_story("run-bad")
    spill = tmp_path / "spill.jsonl"
    recorder = await SqlRecorder.open(db_url, spill_path=spill)
    await recorder.run_started(story.started)
    orphan = replace(story.calls[0], attempt_id="no-such-attempt")
    with pytest.raises(StorageError, match="could not write to database"):
        await recorder.call_finished(orphan)
    # The recorder keeps working after a failed batch.
    await recorder.attempt_started(story.attempts_started[0])
    await recorder.call_finished(story.calls[0])
    # Closing says what it could not write and where it is kept.
    with pytest.raises(StorageError, match=r"1 record\(s\) could not be written .* kept in"):
        await recorder.aclose()
    assert len(get_run(db_url, "run-bad").calls) == 1
    assert spill.exists()
    # The next recorder tries again; the database still refuses the orphan, which moves aside.
    async with await SqlRecorder.open(db_url, spill_path=spill):
        pass
    assert not spill.exists() and spill.with_name(spill.name + ".rejected").exists()


_CRASHING_WRITER = """
import asyncio, sys
from datetime import datetime, UTC
from decimal import Decimal
from orchestrator.records import AttemptRecord, CallRecord, CallKind, RunRecord
from storage import SqlRecorder

async def main() -> None:
    url, run_id = sys.argv[1], sys.argv[2]
    recorder = await SqlRecorder.open(url, flush_interval_s=3600)
    await recorder.run_started(RunRecord(
        run_id=run_id, workflow="w", policy="p", budget_usd=Decimal("1"), deadline_s=None,
        seed=1, simulated=True, started_at=datetime.now(UTC)))
    await recorder.attempt_started(AttemptRecord(
        attempt_id=run_id + "-a", run_id=run_id, subtask="s", model="m", batch=0, sample=0,
        max_tokens=10, started_s=0.0))
    await recorder.call_finished(CallRecord(
        call_id=run_id + "-c", run_id=run_id, attempt_id=run_id + "-a", parent_call_id=None,
        kind=CallKind.LLM, subtask="s", model="m", cost_usd=Decimal("0.000000123")))
    print("durable", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_call_finished_is_durable_when_the_process_dies(db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, db_url, "run-crash"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else b""
        assert line == b"durable\n", process.stderr.read() if process.stderr else line
    finally:
        # No aclose, no flush: the process dies the moment call_finished has returned.
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL

    detail = get_run(db_url, "run-crash")
    assert [c.call_id for c in detail.calls] == ["run-crash-c"]
    assert detail.calls[0].cost_usd == Decimal("0.000000123")
    assert [a.attempt_id for a in detail.attempts] == ["run-crash-a"]


def test_migrations_build_the_models_schema(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    upgrade(db_url)  # a second upgrade is a no-op
    assert current_revision(db_url) == head_revision() == "0009"
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            tables = set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert {"runs", "subtask_executions", "attempts", "calls", "plan_decisions", "api_tokens"} <= tables


@pytest.mark.postgres
def test_concurrent_upgrades_take_turns(postgres_url: str) -> None:
    """Workers starting together (a process and threads) all migrate without error."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = "import sys; from storage.migrate import upgrade; upgrade(sys.argv[1])"
    process = subprocess.Popen(
        [sys.executable, "-c", script, postgres_url], cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    errors = errors_when_together(lambda: upgrade(postgres_url), 2)
    _, stderr = process.communicate(timeout=60)
    assert errors == []
    assert process.returncode == 0, stderr.decode()
    assert current_revision(postgres_url) == head_revision()


async def test_unknown_run_id_says_how_to_find_ids(db_url: str) -> None:
    async with await SqlRecorder.open(db_url):
        pass
    with pytest.raises(StorageError) as info:
        get_run(db_url, "abc")
    assert str(info.value) == "run `abc` not found; `budgetflow runs list` shows the ids"


@pytest.mark.parametrize(
    "url",
    ["mysql+pymysql://user:secret@db/runs", "mongodb://db/runs", "not a url"],
)
async def test_unsupported_urls_name_the_supported_schemes(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        list_runs(url)
    message = str(info.value)
    assert "sqlite:///" in message and "postgresql+psycopg://" in message
    assert "secret" not in message
    with pytest.raises(ConfigError):
        await SqlRecorder.open(url)


async def test_unreachable_postgres_is_a_storage_error(unused_port: int) -> None:
    url = f"postgresql+psycopg://postgres:secret@127.0.0.1:{unused_port}/nothing"
    with pytest.raises(StorageError, match="could not read database") as info:
        list_runs(url)
    assert "secret" not in str(info.value)
    with pytest.raises(StorageError, match="could not migrate database"):
        await SqlRecorder.open(url)


def test_plain_postgresql_scheme_uses_psycopg() -> None:
    url = storage.parse_database_url("postgresql://u@h/db")
    assert url.drivername == "postgresql+psycopg"


def test_missing_sqlite_file_and_missing_schema(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no database file at"):
        list_runs(f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()
    empty = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{empty}").dispose()
    with sa.create_engine(f"sqlite:///{empty}").connect() as connection:
        connection.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
        connection.commit()
    with pytest.raises(StorageError, match="has no budgetflow tables"):
        get_run(f"sqlite:///{empty}", "abc")
    with pytest.raises(ConfigError, match="does not exist"):
        make_engine(f"sqlite:///{tmp_path / 'no' / 'dir.db'}")


def test_invalid_limit_is_a_config_error(sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match="`limit` must be at least 1"):
        list_runs(sqlite_url, limit=0)


def test_public_surface_is_sorted_and_complete() -> None:
    assert storage.__all__ == sorted(storage.__all__)
    assert all(hasattr(storage, name) for name in storage.__all__)
