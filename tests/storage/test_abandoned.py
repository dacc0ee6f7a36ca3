"""Runs whose process died: heartbeats, detection, and closing them with the spend their calls prove."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from orchestrator.records import AttemptStatus, Outcome, SubtaskStatus
from storage import SqlRecorder, find_abandoned, get_run, list_runs, make_engine, mark_abandoned
from storage.models import Run
from tests.storage.test_sql_recorder import make_story


async def _record_unfinished(url: str, run_id: str, *, heartbeat_interval_s: float = 5.0) -> None:
    """Record a run up to its calls and attempts' start, then stop as a killed process would."""
    story = make_story(run_id, started_at=datetime.now(UTC))
    async with await SqlRecorder.open(url, heartbeat_interval_s=heartbeat_interval_s) as recorder:
        await recorder.run_started(story.started)
        await recorder.subtask_changed(story.subtasks[0])
        for attempt in story.attempts_started:
            await recorder.attempt_started(attempt)
        for call in story.calls:
            await recorder.call_finished(call)


def _age_heartbeat(url: str, run_id: str, seconds: float) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.update(Run)
                .where(Run.run_id == run_id)
                .values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=seconds))
            )
    finally:
        engine.dispose()


def _heartbeat(url: str, run_id: str) -> datetime | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            value: datetime | None = connection.scalar(
                sa.select(Run.heartbeat_at).where(Run.run_id == run_id)
            )
            return value
    finally:
        engine.dispose()


async def test_a_running_run_refreshes_its_heartbeat(db_url: str) -> None:
    story = make_story("beating", started_at=datetime.now(UTC))
    async with await SqlRecorder.open(db_url, heartbeat_interval_s=0.05) as recorder:
        await recorder.run_started(story.started)
        await recorder.flush()
        first = _heartbeat(db_url, "beating")
        assert first is not None
        for _ in range(200):
            await asyncio.sleep(0.02)
            later = _heartbeat(db_url, "beating")
            if later is not None and later > first:
                break
        else:
            raise AssertionError("the heartbeat was not refreshed within 4 s")
        await recorder.run_finished(story.finished)
    assert get_run(db_url, "beating").run.outcome is Outcome.COMPLETED


async def test_a_dead_run_shows_as_abandoned_with_the_spend_its_calls_prove(db_url: str) -> None:
    await _record_unfinished(db_url, "dead")
    await _record_unfinished(db_url, "alive")
    proven = Decimal("0.123580249")  # the story's call costs, warm-up included
    # Just stopped: not stale yet, shown as running with what it has spent so far.
    assert {r.run_id: r.outcome for r in list_runs(db_url)} == {
        "dead": Outcome.RUNNING,
        "alive": Outcome.RUNNING,
    }
    _age_heartbeat(db_url, "dead", 3600)
    summary = {r.run_id: r for r in list_runs(db_url)}
    assert summary["dead"].outcome is Outcome.ABANDONED
    assert summary["dead"].spent_usd == proven
    assert summary["alive"].outcome is Outcome.RUNNING
    detail = get_run(db_url, "dead")
    assert detail.run.outcome is Outcome.ABANDONED and detail.run.spent_usd == proven
    assert [r.run_id for r in find_abandoned(db_url)] == ["dead"]

    closed = mark_abandoned(db_url)
    assert [(r.run_id, r.spent_usd) for r in closed] == [("dead", proven)]
    detail = get_run(db_url, "dead")
    assert detail.run.outcome is Outcome.ABANDONED
    assert detail.run.spent_usd == proven
    assert detail.run.reason is not None and "no heartbeat" in detail.run.reason
    assert {a.status for a in detail.attempts} == {AttemptStatus.CANCELLED}
    assert {s.status for s in detail.subtasks} == {SubtaskStatus.CANCELLED}
    # Idempotent, and the live run is untouched.
    assert mark_abandoned(db_url) == []
    assert get_run(db_url, "alive").run.outcome is Outcome.RUNNING


async def test_mark_abandoned_can_name_runs(db_url: str) -> None:
    for run_id in ("x", "y"):
        await _record_unfinished(db_url, run_id)
        _age_heartbeat(db_url, run_id, 3600)
    assert [r.run_id for r in mark_abandoned(db_url, run_ids=["y"])] == ["y"]
    assert get_run(db_url, "x").run.outcome is Outcome.ABANDONED  # shown so, not yet closed
    assert [r.run_id for r in find_abandoned(db_url)] == ["x"]
