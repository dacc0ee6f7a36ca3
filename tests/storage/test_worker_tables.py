"""The workers' tables in DBOS's system database: made by `migrate_dbos`, also when workers race."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from budgetflow.settings import Settings
from budgetflow.worker import migrate_dbos


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_workers_starting_together_all_find_the_heartbeats_table(
    database: str, request: pytest.FixtureRequest
) -> None:
    """Six workers migrate at the same instant (the table's creation races on PostgreSQL): none fails,
    and the table is there once."""
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "postgres_url")
    settings = Settings(database_url=url)
    start = threading.Barrier(6)
    failures: list[BaseException] = []

    def migrate() -> None:
        start.wait()
        try:
            migrate_dbos(settings)
        except BaseException as error:  # collected for the assertion
            failures.append(error)

    threads = [threading.Thread(target=migrate) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    engine = sa.create_engine(migrate_dbos(settings))
    try:
        schema = None if database == "sqlite" else "dbos"
        assert sa.inspect(engine).has_table("budgetflow_workers", schema=schema)
    finally:
        engine.dispose()
