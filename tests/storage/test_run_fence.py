"""A recorder fenced to one execution writes nothing once another execution took the run over
(`SqlRecorder(fence=)`, `resume_point(owner=)`), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from orchestrator.records import Outcome
from storage import SqlRecorder, get_run, make_engine
from storage.models import Run
from storage.resume import resume_point
from storage.sql_recorder import RunFence, RunFenced
from tests.storage.test_sql_recorder import RunStory, make_story


def _owner(url: str, run_id: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            owner: str | None = connection.scalar(sa.select(Run.owner).where(Run.run_id == run_id))
            return owner
    finally:
        engine.dispose()


async def test_the_old_execution_is_fenced_after_a_takeover(db_url: str) -> None:
    story = make_story("fenced", started_at=datetime.now(UTC))
    old = await SqlRecorder.open(db_url, fence=RunFence("fenced", "old"))
    await old.run_started(story.started)
    await old.subtask_changed(story.subtasks[0])
    for attempt in story.attempts_started:
        await old.attempt_started(attempt)
    await old.flush()
    assert _owner(db_url, "fenced") == "old"  # its first write claimed the run

    point = resume_point(db_url, "fenced", stale_after_s=0.001, owner="new")
    assert _owner(db_url, "fenced") == "new"
    with pytest.raises(RunFenced, match="taken over"):
        await old.call_finished(story.calls[0])  # the paused execution wakes up and tries
    with pytest.raises(RunFenced):
        await old.run_finished(story.finished)
    with contextlib.suppress(RunFenced):
        await old.aclose()  # nothing is left to write, and nothing is spilled for later
    assert old.spill_path is None or not old.spill_path.exists()
    assert get_run(db_url, "fenced").calls == ()  # nothing of the old execution landed

    new = await SqlRecorder.open(db_url, fence=RunFence("fenced", "new"))
    await new.run_started(point.run)
    await new.call_finished(story.calls[0])
    await new.run_finished(story.finished)
    await new.aclose()
    detail = get_run(db_url, "fenced")
    assert detail.run.outcome is Outcome.COMPLETED
    assert [c.call_id for c in detail.calls] == [story.calls[0].call_id]
    assert _owner(db_url, "fenced") == "new"  # a run row's upsert never changes the owner


def _beat_at(url: str, run_id: str) -> datetime:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            beat: datetime = connection.scalar(sa.select(Run.heartbeat_at).where(Run.run_id == run_id))
            return beat
    finally:
        engine.dispose()


async def test_a_taken_over_execution_that_still_beats_neither_blocks_the_takeover_nor_beats_on(
    db_url: str,
) -> None:
    """A paused worker beats once more when it comes back: the run looks alive by its heartbeat, yet the
    worker that took it over resumes it (`stale_after_s=None`), and the old beats land no more."""
    story = make_story("beating", started_at=datetime.now(UTC))
    old = await SqlRecorder.open(db_url, fence=RunFence("beating", "old"), heartbeat_interval_s=0.02)
    await old.run_started(story.started)
    await old.flush()
    first = _beat_at(db_url, "beating")
    await _until_changed(db_url, "beating", first)  # it beats
    with pytest.raises(Exception, match="is running"):
        resume_point(db_url, "beating", owner="new")  # a live process is not taken over by default

    resume_point(db_url, "beating", stale_after_s=None, owner="new")
    taken = _beat_at(db_url, "beating")
    await asyncio.sleep(0.2)  # ten beats of the old execution's
    assert _beat_at(db_url, "beating") == taken
    with contextlib.suppress(RunFenced):
        await old.aclose()


async def _until_changed(url: str, run_id: str, beat: datetime) -> None:
    def poll() -> None:
        deadline = time.monotonic() + 10
        while _beat_at(url, run_id) == beat:
            assert time.monotonic() < deadline, "the run's heartbeat was not refreshed within 10 s"
            time.sleep(0.01)

    await asyncio.to_thread(poll)


@pytest.mark.postgres
def test_a_writer_stopped_inside_its_transaction_does_not_block_the_takeover_for_long(
    postgres_url: str,
) -> None:
    """A process stopped while its transaction holds the run's row lock (here: a connection that
    simply stops talking) is cut off by PostgreSQL, so the worker taking the run over gets the row."""
    from storage._engine import _IDLE_IN_TRANSACTION_S
    from storage.migrate import upgrade

    engine = make_engine(postgres_url)
    try:
        upgrade(engine)
        story = make_story("locked", started_at=datetime.now(UTC))
        asyncio.run(_record_start(postgres_url, story))
        stopped = engine.connect()
        stopped.execute(sa.select(Run.owner).where(Run.run_id == "locked").with_for_update())
        started = time.monotonic()
        resume_point(postgres_url, "locked", stale_after_s=None, owner="new")  # waits for the lock
        waited = time.monotonic() - started
        assert _IDLE_IN_TRANSACTION_S - 1 < waited < _IDLE_IN_TRANSACTION_S + 10
        assert _owner(postgres_url, "locked") == "new"
        with pytest.raises(sa.exc.DBAPIError):  # the stopped one finds its session ended
            stopped.execute(sa.update(Run).where(Run.run_id == "locked").values(owner="old"))
        stopped.close()
    finally:
        engine.dispose()


async def _record_start(url: str, story: RunStory) -> None:
    recorder = await SqlRecorder.open(url)
    await recorder.run_started(story.started)
    await recorder.aclose()
