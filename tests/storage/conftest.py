"""Real servers for the storage tests: PostgreSQL 15 and Redis on loopback.

Both are started once per session on free ports and stopped at the end.
Tests are isolated by a fresh PostgreSQL database per test and by a unique
run id (hence Redis key prefix) per test. PostgreSQL refuses to run as root,
so as root its binaries run as the `postgres` user through `runuser`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
import redis
from redis.asyncio import BlockingConnectionPool, Redis

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = Path("/usr/bin/redis-server")
_START_TIMEOUT_S = 30.0
_database_ids = itertools.count()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL server."""

    port: int
    """TCP port on 127.0.0.1."""

    def url(self, database: str) -> str:
        """SQLAlchemy URL of one database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to the `postgres` database."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )


def _as_postgres(*argv: str | Path) -> list[str]:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return [*prefix, *(str(a) for a in argv)]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL 15 server for the session."""
    if not (PG_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL binaries not found in `{PG_BIN}`")
    root = Path(tempfile.mkdtemp(prefix="budgetflow-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
    data = root / "data"
    port = free_port()
    subprocess.run(
        _as_postgres(
            PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        ),
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    subprocess.run(
        _as_postgres(PG_BIN / "pg_ctl", "-D", data, "-l", root / "server.log", "-W", "-o", options, "start"),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            ready = subprocess.run(
                [PG_BIN / "pg_isready", "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
                capture_output=True,
            )
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                log = (root / "server.log").read_text(errors="replace")
                raise RuntimeError(f"PostgreSQL did not start within {_START_TIMEOUT_S} s:\n{log}")
            time.sleep(0.1)
        yield PostgresServer(port=port)
    finally:
        subprocess.run(
            _as_postgres(PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"budgetflow_test_{next(_database_ids)}"
    with postgres_server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    with postgres_server.admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database, once on SQLite and once on PostgreSQL."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def errors_when_together(
    call: Callable[[], object], count: int, timeout_s: float = 60.0
) -> list[BaseException]:
    """Run `call` on `count` threads released at the same instant; what each raised."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def one() -> None:
        start.wait(timeout_s)
        try:
            call()
        except BaseException as error:  # collected for the caller to assert on
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    return errors


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server."""

    port: int
    """TCP port on 127.0.0.1."""

    @property
    def url(self) -> str:
        """Connection URL."""
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Start a throwaway redis-server (no persistence) for the session."""
    if not REDIS_SERVER.exists():
        pytest.skip(f"redis-server not found at `{REDIS_SERVER}`")
    root = Path(tempfile.mkdtemp(prefix="budgetflow-redis-"))
    port = free_port()
    argv = [
        str(REDIS_SERVER),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(root),
    ]  # fmt: skip
    with (root / "redis.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        try:
            deadline = time.monotonic() + _START_TIMEOUT_S
            while True:
                try:
                    if client.ping():
                        break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        text = (root / "redis.log").read_text(errors="replace")
                        raise RuntimeError(f"redis-server did not start:\n{text}") from None
                    time.sleep(0.05)
        finally:
            client.close()
        yield RedisServer(port=port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server."""
    return redis_server.url


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nothing listens on (for "unreachable server" tests)."""
    return free_port()


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> str:
    """A run id unique to this test (its Redis keys and rows are its own)."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    return f"run-{digest}"


@pytest_asyncio.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """An async client of the session's redis-server."""
    client = Redis.from_pool(
        BlockingConnectionPool.from_url(redis_server.url, max_connections=16, timeout=30)
    )
    try:
        yield client
    finally:
        await client.aclose()
