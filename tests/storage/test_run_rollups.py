"""Pre-aggregates of stopped runs: written with the final row, equal to the calls they sum, filled
for old databases by their migration, and percentiles read off their histograms within a bucket."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command

from storage import SqlRecorder, make_engine, mark_abandoned
from storage.migrate import alembic_config, upgrade
from storage.models import RUN_MODEL_STATS, Call
from storage.run_rollups import (
    LATENCY_BOUNDS_S,
    latency_columns,
    quantile_from_buckets,
    rebuild_rollups,
)
from tests.storage.test_abandoned import _age_heartbeat, _record_unfinished
from tests.storage.test_sql_recorder import make_story


def _stats(url: str) -> dict[tuple[str, str], dict[str, object]]:
    engine = make_engine(url)
    try:
        with engine.connect() as db:
            return {
                (row.run_id, row.model): dict(row._mapping) for row in db.execute(sa.select(RUN_MODEL_STATS))
            }
    finally:
        engine.dispose()


def _from_calls(url: str, run_id: str) -> dict[str, tuple[int, Decimal, int, int, list[int]]]:
    engine = make_engine(url)
    try:
        with engine.connect() as db:
            rows = db.execute(
                sa.select(
                    Call.model, Call.cost_usd, Call.input_tokens, Call.output_tokens, Call.latency_s
                ).where(Call.run_id == run_id, Call.kind == "llm")
            ).all()
    finally:
        engine.dispose()
    out: dict[str, tuple[int, Decimal, int, int, list[int]]] = {}
    for name, cost, tokens_in, tokens_out, latency in rows:
        model = name or ""
        n, c, i, o, buckets = out.get(model, (0, Decimal(0), 0, 0, [0] * (len(LATENCY_BOUNDS_S) + 1)))
        buckets = list(buckets)
        buckets[bisect.bisect_left(LATENCY_BOUNDS_S, latency)] += 1
        out[model] = (n + 1, c + cost, i + tokens_in, o + tokens_out, buckets)
    return out


def _check(url: str, run_id: str) -> None:
    expected = _from_calls(url, run_id)
    got = {model: row for (run, model), row in _stats(url).items() if run == run_id}
    assert set(got) == set(expected) and expected
    for model, (n, cost, tokens_in, tokens_out, buckets) in expected.items():
        row = got[model]
        assert (row["calls"], row["cost_usd"], row["input_tokens"], row["output_tokens"]) == (
            n,
            cost,
            tokens_in,
            tokens_out,
        )
        assert [row[c] for c in latency_columns()] == buckets


async def test_a_finished_run_is_rolled_up_with_its_final_row(db_url: str) -> None:
    story = make_story("done", started_at=datetime.now(UTC))
    async with await SqlRecorder.open(db_url) as recorder:
        await recorder.run_started(story.started)
        await recorder.subtask_changed(story.subtasks[0])
        for attempt in story.attempts_started:
            await recorder.attempt_started(attempt)
        for call in story.calls:
            await recorder.call_finished(call)
        await recorder.flush()
        assert _stats(db_url) == {}  # a running run has none
        await recorder.run_finished(story.finished)
    _check(db_url, "done")


async def test_an_abandoned_run_is_rolled_up_when_closed(db_url: str) -> None:
    await _record_unfinished(db_url, "dead")
    _age_heartbeat(db_url, "dead", 3600)
    assert _stats(db_url) == {}
    mark_abandoned(db_url)
    _check(db_url, "dead")


def _downgrade(url: str, revision: str) -> None:
    # A plain engine: SQLite's foreign keys off, as the batch migrations that drop a column copy
    # `runs` to a new table and drop the old one (with them on, its children would cascade away).
    engine = sa.create_engine(url)
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


async def test_the_migration_fills_old_databases_and_rebuild_is_idempotent(sqlite_url: str) -> None:
    story = make_story("old", started_at=datetime.now(UTC))
    engine = make_engine(sqlite_url)
    try:
        # A run recorded, then the schema taken back to before the rollups (as an old database).
        async with await SqlRecorder.open(sqlite_url) as recorder:
            await recorder.run_started(story.started)
            await recorder.subtask_changed(story.subtasks[0])
            for attempt in story.attempts_started:
                await recorder.attempt_started(attempt)
            for call in story.calls:
                await recorder.call_finished(call)
            await recorder.flush()
        with engine.begin() as db:
            db.execute(sa.text("UPDATE runs SET outcome = 'completed' WHERE run_id = 'old'"))
        _downgrade(sqlite_url, "0004")
        assert "run_model_stats" not in sa.inspect(engine).get_table_names()
        upgrade(sqlite_url)
        _check(sqlite_url, "old")
        before = _stats(sqlite_url)
        assert rebuild_rollups(engine) == 1
        assert _stats(sqlite_url) == before
    finally:
        engine.dispose()


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_percentiles_from_buckets_are_within_one_bucket(q: float) -> None:
    rng = np.random.default_rng(7)
    values = rng.lognormal(mean=0.3, sigma=0.9, size=20_000)
    counts = [0] * (len(LATENCY_BOUNDS_S) + 1)
    for v in values:
        counts[bisect.bisect_left(LATENCY_BOUNDS_S, float(v))] += 1
    exact = float(np.quantile(values, q))
    read = quantile_from_buckets(counts, LATENCY_BOUNDS_S, q)
    assert read is not None
    assert abs(read / exact - 1) < 0.16, (read, exact)
    assert quantile_from_buckets([0] * len(counts), LATENCY_BOUNDS_S, q) is None
