"""The storage suite's databases (a SQLite file, a fresh PostgreSQL database) for the learning tests."""

from __future__ import annotations

from tests.storage.conftest import (  # noqa: F401 - fixtures
    db_url,
    postgres_server,
    postgres_url,
    sqlite_url,
)
