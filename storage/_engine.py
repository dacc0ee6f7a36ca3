"""Database URLs and engines: which URLs we accept and how we connect.

Every engine budgetflow creates goes through `make_engine`, so the SQLite
pragmas (WAL, full sync, foreign keys, busy timeout), the JSON encoding and
the error messages are the same for the recorder, the queries and the
migrations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, InterfaceError, OperationalError

from orchestrator.errors import ConfigError, StorageError

__all__ = [
    "SUPPORTED_URLS",
    "ensure_sqlite_dir",
    "make_engine",
    "parse_database_url",
    "redact",
    "sqlite_path",
    "storage_error",
]

SUPPORTED_URLS = (
    "`sqlite:///path/to/runs.db` (a file) or `postgresql+psycopg://user:password@host:5432/dbname`"
)
"""The URL forms budgetflow accepts, for error messages."""

_SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
_POSTGRES_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
_PASSWORD = re.compile(r"(://[^:/@]*):[^@]*@")
_BUSY_TIMEOUT_S = 30.0
_IDLE_IN_TRANSACTION_S = 10
"""PostgreSQL ends a session of ours that sits this long inside a transaction.

budgetflow never keeps a transaction open while it waits, so only a process that stopped
mid-transaction (SIGSTOP, a freeze, a cut network) hits it; without it, that process's row
locks would block every other writer of its runs (the worker taking them over) until it
came back. Its own write then fails, and is retried as any lost connection's is."""


def redact(url: str | URL) -> str:
    """Render a URL with its password hidden, for messages."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return _PASSWORD.sub(r"\1:***@", url)


def parse_database_url(url: str | URL) -> URL:
    """Validate a database URL and pin the driver budgetflow ships with.

    `postgresql://` and `postgres://` become `postgresql+psycopg://` (psycopg 3
    is the PostgreSQL driver we depend on).

    Raises:
        ConfigError: the URL cannot be parsed or names an unsupported database or driver.
    """
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database URL `{redact(str(url))}` is not a valid URL; use {SUPPORTED_URLS}"
        ) from None
    name = parsed.drivername
    if name in _SQLITE_DRIVERS:
        return parsed
    if name in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigError(
        f"database URL `{redact(parsed)}` uses scheme `{name}`, which budgetflow does not "
        f"support; use {SUPPORTED_URLS}"
    )


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL, or `None` for in-memory databases and other backends."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def ensure_sqlite_dir(url: str | URL) -> None:
    """Create a SQLite file's directory (`.budgetflow/` by default) if it is missing; else nothing."""
    path = sqlite_path(parse_database_url(url))
    if path is not None:
        # When this fails (a path component is a file, no permission), opening the
        # database says which component and what to do.
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)


def _json_default(value: object) -> object:
    """Encode what `json` cannot: mappings, sets, money, times, dataclasses, numpy scalars."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    for method in ("tolist", "item"):  # numpy arrays and scalars
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    # A record must not fail a run because an explanation holds an odd object.
    return repr(value)


_json_dumps = functools.partial(json.dumps, default=_json_default)


def _postgres_on_connect(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"SET idle_in_transaction_session_timeout = '{_IDLE_IN_TRANSACTION_S}s'")
    finally:
        cursor.close()
    dbapi_connection.commit()  # a session setting made in a rolled-back transaction is undone


def _sqlite_on_connect(dbapi_connection: Any, _record: object, *, file: bool) -> None:
    cursor = dbapi_connection.cursor()
    try:
        if file:
            # WAL lets readers (CLI, web) read while the recorder writes; FULL sync
            # makes each commit survive power loss, not just a process crash.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
    finally:
        cursor.close()


def make_engine(url: str | URL, *, must_exist: bool = False) -> Engine:
    """Create an engine for a budgetflow database (no connection is made yet).

    Args:
        url: a URL accepted by `parse_database_url`.
        must_exist: for readers: a SQLite file that does not exist is an error
            instead of being created empty.

    Raises:
        ConfigError: the URL is invalid, or its SQLite directory does not exist.
        StorageError: `must_exist` and the SQLite file does not exist.
    """
    parsed = parse_database_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        if path.is_dir():
            raise ConfigError(
                f"SQLite database `{path}` is a directory; give a file path such as `{path / 'runs.db'}`"
            )
        blocking = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError(
                f"SQLite database `{path}`: `{blocking}` is a file, not a directory; choose another path"
            )
        if must_exist and not path.exists():
            raise StorageError(
                f"no database file at `{path}`; record a run there first or pass the right URL"
            )
        if not path.parent.exists():
            raise ConfigError(
                f"SQLite database `{path}`: directory `{path.parent}` does not exist; create it "
                "or choose another path"
            )
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            json_serializer=_json_dumps,
            connect_args={"timeout": _BUSY_TIMEOUT_S},
        )
        sa.event.listen(engine, "connect", functools.partial(_sqlite_on_connect, file=path is not None))
        return engine
    engine = sa.create_engine(parsed, json_serializer=_json_dumps, pool_pre_ping=True)
    sa.event.listen(engine, "connect", _postgres_on_connect)
    return engine


def storage_error(action: str, engine: Engine, error: BaseException) -> StorageError:
    """A `StorageError` that names the action, the (redacted) database, the cause and what to do."""
    cause = str(getattr(error, "orig", None) or error).strip().splitlines()
    detail = cause[0] if cause else type(error).__name__
    where = f"database `{redact(engine.url)}`"
    path = sqlite_path(engine.url)
    sqlite = engine.url.get_backend_name() == "sqlite"
    lowered = detail.lower()
    if sqlite and any(sign in lowered for sign in _NOT_A_DATABASE):
        shown = path or redact(engine.url)
        return StorageError(
            f"could not {action} {where}: `{shown}` is not a SQLite database budgetflow can read"
            f" ({detail}); it is damaged or another kind of file: move it aside (a fresh one is"
            " created on the next run) or pass another `--db`"
        )
    if isinstance(error, IntegrityError):
        hint = (
            "a record refers to a run or attempt that was not recorded before it "
            "(`run_started` and `attempt_started` come first)"
        )
    elif "already exists" in lowered:
        hint = "another process created the schema at the same moment; try again (the schema is in place now)"
    elif sqlite and "locked" in lowered:
        hint = (
            f"another process kept the file locked for over {_BUSY_TIMEOUT_S:g}s; wait for it to"
            " finish or stop it, then try again"
        )
    elif sqlite and isinstance(error, DatabaseError | InterfaceError):
        hint = (
            f"check that `{path}` and its directory are readable and writable and that the disk is not full"
            if path is not None
            else "check the SQLite URL"
        )
    elif isinstance(error, OperationalError | InterfaceError):
        hint = "check that the database server is running and the URL is right"
    else:
        hint = "this is likely a bug in budgetflow; please report it with the message"
    return StorageError(f"could not {action} {where}: {detail}; {hint}")


_NOT_A_DATABASE = ("file is not a database", "database disk image is malformed", "not a database")
"""What SQLite says about a file that is not (or no longer) a database."""
