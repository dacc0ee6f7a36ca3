"""The storage suite's real servers (redis-server, PostgreSQL on loopback), and budgets to test with."""

from __future__ import annotations

from tests.storage.conftest import (  # noqa: F401 - fixtures
    postgres_server,
    postgres_url,
    redis_client,
    redis_server,
    redis_url,
    run_id,
    sqlite_url,
)
