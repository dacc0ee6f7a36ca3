"""The workers' tables in DBOS's system database: made by `migrate_dbos`, also when workers race."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from budgetflow.settings import Settings
from budgetflow.worker import _beats_table, _create_beats_table, migrate_dbos
from tests.storage.conftest import errors_when_together


def test_workers_starting_together_all_find_the_heartbeats_table(db_url: str) -> None:
    """Twelve workers migrate at the same instant (the table's creation raced: on SQLite some failed
    with "table already exists"): none fails, and the table is there."""
    settings = Settings(database_url=db_url)
    assert errors_when_together(lambda: migrate_dbos(settings), 12) == []
    engine = sa.create_engine(migrate_dbos(settings))
    try:
        schema = None if engine.dialect.name == "sqlite" else "dbos"
        assert sa.inspect(engine).has_table("budgetflow_workers", schema=schema)
    finally:
        engine.dispose()


def test_a_worker_that_loses_the_race_to_create_the_table_goes_on(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made deterministic: another worker created the table between this one's check and
    its `CREATE TABLE` (the create runs without checking first and fails); the loser carries on."""
    url = migrate_dbos(Settings(database_url=db_url))  # the table exists
    unchecked = sa.MetaData.create_all

    def create_unchecked(self: sa.MetaData, bind: sa.Engine, checkfirst: bool = True) -> None:
        unchecked(self, bind, checkfirst=False)

    monkeypatch.setattr(sa.MetaData, "create_all", create_unchecked)
    engine = sa.create_engine(url)
    try:
        with pytest.raises(sa.exc.DBAPIError):  # what the loser's CREATE TABLE meets
            _beats_table(url).metadata.create_all(engine)
        _create_beats_table(engine, _beats_table(url))
    finally:
        engine.dispose()
