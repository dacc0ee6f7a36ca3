"""Schema migrations through the Alembic API, without an `alembic.ini`.

The migration scripts live inside this package (`storage/migrations`), so an
installed budgetflow can create or upgrade its database anywhere:

```python
from storage.migrate import upgrade
upgrade("sqlite:///runs.db")
```

These functions block; async callers run them on a worker thread (the
`SqlRecorder` does so on its writer thread).
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from storage._engine import make_engine, storage_error

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
"""Where the Alembic environment and revisions live."""

# Alembic keeps the running migration context in module globals (`alembic.context`,
# `alembic.op`), so two upgrades in one process must not overlap: two recorders
# opened at once would corrupt each other's context. Across processes the
# PostgreSQL advisory lock in `env.py` takes over.
_ALEMBIC_LOCK = threading.Lock()


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

    Safe to call on an up-to-date database (it does nothing) and, on
    PostgreSQL, from several processes at once (they take turns).

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
        with _ALEMBIC_LOCK, engine.begin() as connection:
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
