"""Alembic environment for budgetflow's schema.

Used two ways:

- programmatically by `storage.migrate.upgrade`, which passes an open
  connection in `config.attributes["connection"]`;
- from the `alembic` command line with the repository's `alembic.ini`; the
  database URL comes from `-x url=...` or the ini's `sqlalchemy.url`.

On PostgreSQL the upgrade holds a transaction-scoped advisory lock, so
several workers starting at once migrate one after the other.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext

from storage._engine import make_engine
from storage._types import Money, UtcDateTime
from storage.models import Base

_LOCK_KEY = 0x62756467  # "budg": one advisory lock for budgetflow migrations

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass `-x url=...` or set `sqlalchemy.url`")
    return url


def _render_item(kind: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our column types (`Money()`, `UtcDateTime()`, `JSON_DOC`) with their import."""
    if kind != "type":
        return False
    if isinstance(obj, Money | UtcDateTime):
        autogen_context.imports.add("from storage._types import JSON_DOC, Money, UtcDateTime")
        return f"{type(obj).__name__}()"
    if isinstance(obj, sa.JSON) and "postgresql" in getattr(obj, "_variant_mapping", {}):
        autogen_context.imports.add("from storage._types import JSON_DOC, Money, UtcDateTime")
        return "JSON_DOC"
    return False


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        context.run_migrations()


def _run_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, sa.Connection):
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if config.config_file_name is not None and config.file_config.has_section("loggers"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
