"""Schema migrations through the Alembic API, without an `alembic.ini`.

The migration scripts live inside this package (`storage/migrations`), so an
installed budgetflow can create or upgrade its database anywhere:

```python
from storage.migrate import upgrade
upgrade("sqlite:///runs.db")
```

These functions block; async callers run them on a worker thread (the
`SqlRecorder` does so on its writer thread).

Upgrades of one database never overlap: within a process a lock serialises
them; across processes PostgreSQL takes an advisory lock (`env.py`) and a
SQLite file is guarded by an exclusive `flock` on `<file>.migrate-lock` next
to it, so several `budgetflow run`s started at once on a fresh file create
the schema once and the others find it in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.errors import StorageError
from storage._engine import make_engine, sqlite_path, storage_error

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""Where the Alembic environment and revisions live."""

# Alembic keeps the running migration context in module globals (`alembic.context`,
# `alembic.op`), so two upgrades in one process must not overlap: two recorders
# opened at once would corrupt each other's context. Across processes the
# PostgreSQL advisory lock in `env.py` takes over.
_ALEMBIC_LOCK = threading.Lock()

_FILE_LOCK_TIMEOUT_S = 120.0
"""How long an upgrade waits for another process's upgrade of the same SQLite file."""


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Hold an exclusive lock on `<file>.migrate-lock` for a SQLite file database (else nothing).

    `flock` locks are released by the kernel when their process dies, so a crashed
    migration never leaves the database locked.
    """
    path = sqlite_path(engine.url)
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".migrate-lock")
    try:
        handle = lock_path.open("a+b")
    except OSError as error:
        raise StorageError(
            f"cannot create the migration lock `{lock_path}` ({error.strerror}); check that the"
            f" directory `{lock_path.parent}` is writable"
        ) from None
    with handle:
        waited_until = time.monotonic() + _FILE_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > waited_until:
                    raise StorageError(
                        f"another process has been migrating `{path}` for over"
                        f" {_FILE_LOCK_TIMEOUT_S:g}s; wait for it to finish or stop it, then try again"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic `Config` pointing at the packaged migrations.

    Args:
        url: database URL stored as `sqlalchemy.url` (for offline/CLI-like use);
            `upgrade` passes a connection instead.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        # `Config` uses configparser interpolation: a `%` in a password must be doubled.
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest revision the packaged migrations define."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError(f"no migrations found in `{MIGRATIONS_DIR}`")
    return head


def _engine(target: str | URL | Engine) -> tuple[Engine, bool]:
    if isinstance(target, Engine):
        return target, False
    return make_engine(target), True


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Run `alembic upgrade <revision>` on a database.

    Safe to call on an up-to-date database (it does nothing) and from several
    processes at once, on PostgreSQL and on a SQLite file (they take turns).

    Args:
        target: database URL or an engine made by `storage`.
        revision: target revision; `"head"` is the newest.

    Raises:
        ConfigError: the URL is invalid.
        StorageError: the database cannot be reached or the migration failed.
    """
    engine, owned = _engine(target)
    config = alembic_config()
    try:
        with _ALEMBIC_LOCK, _sqlite_file_lock(engine), engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as error:
        raise storage_error("migrate", engine, error) from error
    finally:
        if owned:
            engine.dispose()


def current_revision(target: str | URL | Engine) -> str | None:
    """The revision a database is at, or `None` when it was never migrated.

    Raises:
        ConfigError: the URL is invalid.
        StorageError: the database cannot be reached.
    """
    engine, owned = _engine(target)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as error:
        raise storage_error("read", engine, error) from error
    finally:
        if owned:
            engine.dispose()
