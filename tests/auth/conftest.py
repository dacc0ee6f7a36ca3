"""Fixtures of the auth tests: a migrated database on SQLite (and PostgreSQL where asked)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from storage import make_engine
from storage.migrate import upgrade

# The real servers of the storage tests, for the PostgreSQL cases here.
from tests.storage.conftest import postgres_server, postgres_url, sqlite_url

__all__ = ["engine", "postgres_server", "postgres_url", "sqlite_url"]


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    """An engine on a fresh, migrated SQLite file."""
    upgrade(sqlite_url)
    made = make_engine(sqlite_url)
    try:
        yield made
    finally:
        made.dispose()
