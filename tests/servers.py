"""Real database servers that a test owns, so that it can restart or stop them (fault injection).

The session-wide servers of `tests/storage/conftest.py` are shared by many tests;
a test that kills its database gets its own instance from here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.storage.conftest import PG_BIN, free_port

__all__ = ["PostgresProcess"]


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
