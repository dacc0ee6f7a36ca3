"""A recorder fenced to one execution writes nothing once another execution took the run over
(`SqlRecorder(fence=)`, `resume_point(owner=)`), on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from orchestrator.records import Outcome
from storage import SqlRecorder, get_run, make_engine
from storage.models import Run
from storage.resume import resume_point
from storage.sql_recorder import RunFence, RunFenced
from tests.storage.test_sql_recorder import make_story


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
