"""Real servers that a test owns, so that it can crash, restart, pause or stop them (fault injection).

The session-wide servers of `tests/storage/conftest.py` are shared by many tests;
a test that kills its database gets its own instance from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from tests.storage.conftest import PG_BIN, free_port

__all__ = ["REDIS_SERVER", "OwnRedis", "PostgresProcess", "own_redis"]

REDIS_SERVER = Path("/usr/bin/redis-server")


def _as_postgres(*argv: str | Path) -> list[str]:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return [*prefix, *(str(a) for a in argv)]


class PostgresProcess:
    """A PostgreSQL 15 server on a free loopback port, in a temporary directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="budgetflow-pgfault-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")
        self.data = self.root / "data"
        self.port = free_port()
        subprocess.run(
            _as_postgres(
                PG_BIN / "initdb",
                "-D",
                self.data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off"
        subprocess.run(
            _as_postgres(
                PG_BIN / "pg_ctl",
                "-D",
                self.data,
                "-l",
                self.root / "server.log",
                "-W",
                "-o",
                options,
                "start",
            ),
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 30
        while subprocess.run(
            [PG_BIN / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"], capture_output=True
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError((self.root / "server.log").read_text(errors="replace"))
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop at once (`immediate`: like a crash, connections drop)."""
        subprocess.run(
            _as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"),
            capture_output=True,
        )

    def close(self) -> None:
        """Stop and remove its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """A redis-server one test owns: crashed, restarted, paused and resumed by its PID."""

    def __init__(self, root: Path, *config: str) -> None:
        self.port = free_port()
        self.root = root
        self._config = config
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Connection URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> None:
        argv = [str(REDIS_SERVER), *self._config, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.root)]
        with (self.root / "redis.log").open("ab") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def start_now(self) -> None:
        """Start and wait until it answers (blocking: for setup only)."""
        self._spawn()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                self._check_alive(deadline)
                time.sleep(0.02)
        finally:
            client.close()

    async def start(self) -> None:
        """Start and wait until it answers (no longer `LOADING` its data)."""
        self._spawn()
        client = Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(redis.ConnectionError):
                    if await client.ping():
                        return
                self._check_alive(deadline)
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def _check_alive(self, deadline: float) -> None:
        assert self._process is not None
        if self._process.poll() is not None or time.monotonic() > deadline:
            log = (self.root / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")

    async def crash(self) -> None:
        """SIGKILL: no shutdown, nothing saved beyond what the settings already wrote."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self._process.wait)

    async def restart(self, down_s: float) -> None:
        """Crash, stay down `down_s`, start again on the same port and directory."""
        await self.crash()
        await asyncio.sleep(down_s)
        await self.start()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections and answers nothing."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Stop for good (teardown)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., OwnRedis]]:
    """Start redis-servers with the given config (a file and/or options); kill them at teardown."""
    if not REDIS_SERVER.exists():
        pytest.skip(f"redis-server not found at `{REDIS_SERVER}`")
    servers: list[OwnRedis] = []

    def start(*config: str) -> OwnRedis:
        root = tmp_path / f"redis-{len(servers)}"
        root.mkdir()
        server = OwnRedis(root, *config)
        servers.append(server)
        server.start_now()
        return server

    yield start
    for server in servers:
        server.kill()
