"""API tokens in storage: only hashes are kept; verify, expiry, revocation, scopes, the schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from orchestrator.errors import ConfigError
from storage import make_engine
from storage.migrate import alembic_config, current_revision, head_revision, upgrade
from storage.models import Base
from storage.tokens import (
    LAST_USED_RESOLUTION,
    SCOPES,
    TOKEN_PREFIX,
    create_token,
    get_token,
    grants,
    hash_token,
    list_tokens,
    purge_expired,
    revoke_token,
    verify_token,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _table(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.text("SELECT * FROM api_tokens"))]


def test_the_token_is_long_random_and_only_its_hash_is_stored(engine: Engine) -> None:
    first = create_token(engine, name="ci", scopes=["read"])
    second = create_token(engine, name="ci", scopes=["read"])
    for new in (first, second):
        assert new.token.startswith(TOKEN_PREFIX)
        assert len(new.token) >= len(TOKEN_PREFIX) + 43  # 32 random bytes, URL-safe base64
    assert first.token != second.token
    rows = _table(engine)
    assert len(rows) == 2
    stored = " ".join(str(value) for row in rows for value in row.values())
    for new in (first, second):
        assert new.token not in stored
        assert new.token.removeprefix(TOKEN_PREFIX) not in stored
        assert new.token[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 12] not in stored
    assert {str(row["token_hash"]) for row in rows} == {hash_token(first.token), hash_token(second.token)}


def test_verify_returns_id_name_and_scopes_and_refuses_anything_else(engine: Engine) -> None:
    new = create_token(engine, name="alice laptop", scopes=["submit"], now=T0)
    info = verify_token(engine, new.token, now=T0 + timedelta(seconds=1))
    assert info is not None
    assert (info.token_id, info.name, info.scopes) == (new.info.token_id, "alice laptop", ("submit",))
    near = (new.token[:-1], new.token + "x", new.token.upper(), "Bearer " + new.token)
    for wrong in ("", TOKEN_PREFIX, *near):
        assert verify_token(engine, wrong, now=T0) is None
    assert verify_token(engine, new.token.removeprefix(TOKEN_PREFIX), now=T0) is None


def test_last_used_is_written_at_most_once_a_minute(engine: Engine) -> None:
    new = create_token(engine, name="ci", scopes=["read"], now=T0)
    assert new.info.last_used_at is None
    first_use = T0 + timedelta(seconds=5)
    assert verify_token(engine, new.token, now=first_use) is not None
    assert verify_token(engine, new.token, now=first_use + timedelta(seconds=30)) is not None
    info = get_token(engine, new.info.token_id)
    assert info is not None and info.last_used_at == first_use
    later = first_use + LAST_USED_RESOLUTION
    verified = verify_token(engine, new.token, now=later)
    assert verified is not None and verified.last_used_at == later
    info = get_token(engine, new.info.token_id)
    assert info is not None and info.last_used_at == later


def test_an_expired_token_stops_working_at_its_expiry(engine: Engine) -> None:
    new = create_token(engine, name="short", scopes=["read"], expires_in=timedelta(hours=1), now=T0)
    assert new.info.expires_at == T0 + timedelta(hours=1)
    assert verify_token(engine, new.token, now=T0 + timedelta(minutes=59)) is not None
    assert verify_token(engine, new.token, now=T0 + timedelta(hours=1)) is None
    assert list_tokens(engine, now=T0 + timedelta(hours=2)) == []
    assert [t.name for t in list_tokens(engine, include_inactive=True)] == ["short"]


def test_only_long_expired_tokens_of_the_given_name_are_purged(engine: Engine) -> None:
    link = "login link of budgetflow serve"
    create_token(engine, name=link, scopes=["admin"], expires_in=timedelta(hours=1), now=T0)
    create_token(engine, name=link, scopes=["admin"], expires_in=timedelta(days=9), now=T0)
    create_token(engine, name="alice", scopes=["read"], expires_in=timedelta(hours=1), now=T0)
    create_token(engine, name=link, scopes=["admin"], now=T0)  # never expires
    later = T0 + timedelta(days=8)
    assert purge_expired(engine, name=link, older_than=timedelta(days=7), now=later) == 1
    left = {(t.name, t.expires_at) for t in list_tokens(engine, include_inactive=True, now=later)}
    assert left == {(link, T0 + timedelta(days=9)), ("alice", T0 + timedelta(hours=1)), (link, None)}
    assert purge_expired(engine, name=link, older_than=timedelta(days=7), now=later) == 0


def test_a_revoked_token_stops_working_and_revoking_twice_keeps_the_first_time(engine: Engine) -> None:
    keep = create_token(engine, name="keep", scopes=["admin"], now=T0)
    gone = create_token(engine, name="gone", scopes=["read"], now=T0)
    revoked = revoke_token(engine, gone.info.token_id, now=T0 + timedelta(minutes=1))
    assert revoked.revoked_at == T0 + timedelta(minutes=1)
    again = revoke_token(engine, gone.info.token_id, now=T0 + timedelta(minutes=2))
    assert again.revoked_at == T0 + timedelta(minutes=1)
    assert verify_token(engine, gone.token) is None
    assert verify_token(engine, keep.token) is not None
    assert [t.name for t in list_tokens(engine)] == ["keep"]
    assert [t.name for t in list_tokens(engine, include_inactive=True)] == ["keep", "gone"]
    with pytest.raises(ConfigError, match=r"no token with id `999`; `budgetflow tokens list --all`"):
        revoke_token(engine, 999)


def test_scopes_are_ordered_read_submit_admin() -> None:
    assert SCOPES == ("read", "submit", "admin")
    table = {held: [needed for needed in SCOPES if grants([held], needed)] for held in SCOPES}
    assert table == {
        "read": ["read"],
        "submit": ["read", "submit"],
        "admin": ["read", "submit", "admin"],
    }
    assert not grants([], "read")


@pytest.mark.parametrize(
    ("name", "scopes", "expires_in", "message"),
    [
        ("", ["read"], None, "token name `` must be 1 to 200 characters"),
        ("x" * 201, ["read"], None, "must be 1 to 200 characters"),
        ("ci", ["write"], None, "scope `write` does not exist; use one of read, submit, admin"),
        ("ci", [], None, "a token needs a scope"),
        ("ci", ["read"], timedelta(0), "lifetime must be positive"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    engine: Engine, name: str, scopes: list[str], expires_in: timedelta | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_token(engine, name=name, scopes=scopes, expires_in=expires_in)
    assert _table(engine) == []


def _check_schema(url: str) -> None:
    assert current_revision(url) is None
    upgrade(url)
    upgrade(url)
    assert current_revision(url) == head_revision() == "0009"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            indexes = sa.inspect(connection).get_indexes("api_tokens")
        assert [(i["name"], i["column_names"], bool(i["unique"])) for i in indexes] == [
            ("ix_api_tokens_token_hash", ["token_hash"], True)
        ]
        new = create_token(engine, name="pg", scopes=["submit"], expires_in=timedelta(days=1))
        assert verify_token(engine, new.token) is not None
        assert new.token not in str(_table(engine))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO api_tokens (name, token_hash, scopes, created_at)"
                    " VALUES ('dup', :hash, 'read', CURRENT_TIMESTAMP)"
                ),
                {"hash": hash_token(new.token)},
            )
    finally:
        engine.dispose()


def test_the_migration_builds_the_tokens_table_on_sqlite(sqlite_url: str) -> None:
    _check_schema(sqlite_url)


@pytest.mark.postgres
def test_the_migration_builds_the_tokens_table_on_postgresql(postgres_url: str) -> None:
    _check_schema(postgres_url)


def test_downgrade_drops_only_the_tokens_table(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert "api_tokens" not in tables and "runs" in tables
    assert current_revision(sqlite_url) == "0003"
