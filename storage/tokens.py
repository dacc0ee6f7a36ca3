"""API tokens: created once in plaintext, stored as a hash, verified, listed and revoked.

A token is `bf_` followed by 43 URL-safe characters (`secrets.token_urlsafe(32)`,
256 random bits). Only its SHA-256 is stored: a token that random cannot be
guessed from its hash, so no salt or slow hash is needed, and the hash is an
exact index key for lookups. The plaintext is returned once, by
`create_token`, and never again.

Scopes are ordered: `read` < `submit` < `admin`. A token granted a scope holds
every scope below it (`admin` holds all), see `grants`.

The functions are synchronous (blocking database I/O); async callers, such as
`web.auth.TokenAuthorizer`, run them on a thread. Each takes a database URL
(an engine is made and disposed per call, fine for a CLI) or an `Engine` to
reuse (what a server passes). They do not migrate: the CLI and
`web.auth.authorizer_for` call `storage.migrate.upgrade` first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.errors import ConfigError
from storage._engine import make_engine, storage_error
from storage.models import ApiToken

__all__ = [
    "LAST_USED_RESOLUTION",
    "SCOPES",
    "TOKEN_PREFIX",
    "NewToken",
    "Scope",
    "TokenInfo",
    "check_new_token",
    "create_token",
    "get_token",
    "grants",
    "hash_token",
    "list_tokens",
    "purge_expired",
    "revoke_token",
    "verify_token",
]

Scope = Literal["read", "submit", "admin"]
"""What a token may do: `read` runs, `submit` (and cancel) runs, `admin` everything."""

SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)
"""The scopes from weakest to strongest; each implies the ones before it."""

TOKEN_PREFIX: Final = "bf_"
"""Start of every token, so that a leaked one is recognisable (and secret scanners can match it)."""

LAST_USED_RESOLUTION: Final = timedelta(minutes=1)
"""`last_used_at` is written at most this often per token (a busy client costs no write per request)."""

_TABLE: Final = ApiToken.__table__
_TOKEN_BYTES = 32
_NAME_MAX = 200


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    """What is known about a token; never the token itself."""

    token_id: int
    """Short id, for `budgetflow tokens revoke ID`."""
    name: str
    """What the token is for."""
    scopes: tuple[Scope, ...]
    """Granted scopes (see `grants` for what they imply)."""
    created_at: datetime
    """Creation time (UTC)."""
    expires_at: datetime | None
    """When it stops working (UTC); `None`: never."""
    last_used_at: datetime | None
    """Last successful use (UTC), to the minute; `None`: never used."""
    revoked_at: datetime | None
    """When it was revoked (UTC); `None`: not revoked."""

    def active(self, now: datetime) -> bool:
        """Whether the token works at `now`: not revoked and not expired."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, kw_only=True)
class NewToken:
    """A token just created: the only time its plaintext exists outside the client."""

    token: str
    """The secret, `bf_...`; show it once, it cannot be recovered."""
    info: TokenInfo
    """What was stored about it."""


def grants(scopes: Iterable[Scope], needed: Scope) -> bool:
    """Whether a token holding `scopes` may do what `needed` allows (`admin` ⊇ `submit` ⊇ `read`)."""
    rank = SCOPES.index(needed)
    return any(SCOPES.index(scope) >= rank for scope in scopes)


def hash_token(token: str) -> str:
    """The stored form of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _info(row: sa.Row[Any]) -> TokenInfo:
    """A `TokenInfo` from a row of `_select()`."""
    granted = row.scopes.split()
    return TokenInfo(
        token_id=row.id,
        name=row.name,
        scopes=tuple(s for s in SCOPES if s in granted),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


@contextlib.contextmanager
def _connected(target: str | URL | Engine, action: str) -> Iterator[sa.Connection]:
    """A transaction on `target`; database errors become `StorageError`s naming `action`."""
    owned = not isinstance(target, Engine)
    engine = make_engine(target) if not isinstance(target, Engine) else target
    try:
        with engine.begin() as connection:
            yield connection
    except SQLAlchemyError as error:
        raise storage_error(action, engine, error) from error
    finally:
        if owned:
            engine.dispose()


def _check_scopes(scopes: Iterable[str]) -> tuple[Scope, ...]:
    given = list(scopes)
    unknown = [s for s in given if s not in SCOPES]
    if unknown:
        raise ConfigError(f"scope `{unknown[0]}` does not exist; use one of {', '.join(SCOPES)}")
    if not given:
        raise ConfigError(f"a token needs a scope; use one of {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in given)


def check_new_token(
    *, name: str, scopes: Iterable[str], expires_in: timedelta | None
) -> tuple[str, tuple[Scope, ...]]:
    """Check what a new token would be, without a database: its trimmed name and ordered scopes.

    Raises:
        ConfigError: empty or overlong name, no or unknown scope, lifetime not positive.
    """
    clean_name = name.strip()
    if not clean_name or len(clean_name) > _NAME_MAX:
        raise ConfigError(
            f"token name `{name}` must be 1 to {_NAME_MAX} characters; say what it is for, e.g. `ci`"
        )
    granted = _check_scopes(scopes)
    if expires_in is not None and expires_in <= timedelta(0):
        raise ConfigError(f"a token's lifetime must be positive, got `{expires_in}`")
    return clean_name, granted


def create_token(
    target: str | URL | Engine,
    *,
    name: str,
    scopes: Iterable[str],
    expires_in: timedelta | None = None,
    now: datetime | None = None,
) -> NewToken:
    """Create a token and store its hash; the plaintext is in the result and nowhere else.

    Args:
        target: database URL or engine (already migrated).
        name: what the token is for, e.g. `ci` or `alice laptop`.
        scopes: granted scopes, from `SCOPES`.
        expires_in: lifetime; `None`: until revoked.
        now: creation time (tests); default the current time.

    Raises:
        ConfigError: empty or overlong name, unknown scope, lifetime not positive.
        StorageError: the database cannot be written.
    """
    clean_name, granted = check_new_token(name=name, scopes=scopes, expires_in=expires_in)
    created = now or _now()
    token = TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    row = {
        "name": clean_name,
        "token_hash": hash_token(token),
        "scopes": " ".join(granted),
        "created_at": created,
        "expires_at": None if expires_in is None else created + expires_in,
    }
    with _connected(target, "store a token in") as connection:
        stored = connection.execute(sa.insert(ApiToken).values(**row).returning(*_select().selected_columns))
        info = _info(stored.one())
    return NewToken(token=token, info=info)


def verify_token(target: str | URL | Engine, token: str, *, now: datetime | None = None) -> TokenInfo | None:
    """The token's record when `token` is live (known, not revoked, not expired), else `None`.

    A successful check records the use in `last_used_at`, at most once per
    `LAST_USED_RESOLUTION`.

    Raises:
        StorageError: the database cannot be read.
    """
    if not token.startswith(TOKEN_PREFIX):
        return None
    at = now or _now()
    digest = hash_token(token)
    c = _TABLE.c
    with _connected(target, "check a token against") as connection:
        row = connection.execute(_select().add_columns(c.token_hash).where(c.token_hash == digest)).first()
        if row is None:
            return None
        # The unique index found the row by its hash; compare again in constant time all the same.
        if not hmac.compare_digest(row.token_hash, digest):
            return None
        info = _info(row)
        if not info.active(at):
            return None
        stale = at - LAST_USED_RESOLUTION
        if info.last_used_at is None or info.last_used_at <= stale:
            connection.execute(
                sa.update(ApiToken)
                .where(c.id == info.token_id, sa.or_(c.last_used_at.is_(None), c.last_used_at <= stale))
                .values(last_used_at=at)
            )
            info = dataclasses.replace(info, last_used_at=at)
    return info


def get_token(target: str | URL | Engine, token_id: int) -> TokenInfo | None:
    """The record of token `token_id` (live or not), `None` when there is none.

    Raises:
        StorageError: the database cannot be read.
    """
    with _connected(target, "read tokens from") as connection:
        row = connection.execute(_select().where(_TABLE.c.id == token_id)).first()
    return None if row is None else _info(row)


def list_tokens(
    target: str | URL | Engine, *, include_inactive: bool = False, now: datetime | None = None
) -> list[TokenInfo]:
    """Tokens, oldest first: the live ones, or all with `include_inactive` (revoked and expired too).

    Raises:
        StorageError: the database cannot be read.
    """
    at = now or _now()
    with _connected(target, "read tokens from") as connection:
        rows = connection.execute(_select().order_by(_TABLE.c.id)).all()
    infos = [_info(row) for row in rows]
    return infos if include_inactive else [info for info in infos if info.active(at)]


def revoke_token(target: str | URL | Engine, token_id: int, *, now: datetime | None = None) -> TokenInfo:
    """Revoke token `token_id` for good; revoking a revoked token changes nothing.

    Returns:
        The token's record after the change.

    Raises:
        ConfigError: there is no token with that id.
        StorageError: the database cannot be written.
    """
    at = now or _now()
    c = _TABLE.c
    with _connected(target, "revoke a token in") as connection:
        connection.execute(
            sa.update(ApiToken).where(c.id == token_id, c.revoked_at.is_(None)).values(revoked_at=at)
        )
        row = connection.execute(_select().where(c.id == token_id)).first()
    if row is None:
        raise ConfigError(f"no token with id `{token_id}`; `budgetflow tokens list --all` shows the ids")
    return _info(row)


def purge_expired(
    target: str | URL | Engine, *, name: str, older_than: timedelta, now: datetime | None = None
) -> int:
    """Delete the tokens named `name` that expired more than `older_than` ago; how many went.

    For tokens made by the machine, such as the login links `budgetflow serve` makes at each
    start: they would pile up in `budgetflow tokens list --all`. Tokens people made are
    never purged (their names are theirs).

    Raises:
        StorageError: the database cannot be written.
    """
    cutoff = (now or _now()) - older_than
    c = _TABLE.c
    with _connected(target, "purge expired tokens in") as connection:
        gone = connection.execute(
            sa.delete(ApiToken).where(c.name == name, c.expires_at.is_not(None), c.expires_at < cutoff)
        ).rowcount
    return int(gone or 0)


def _select() -> sa.Select[Any]:
    c = _TABLE.c
    return sa.select(c.id, c.name, c.scopes, c.created_at, c.expires_at, c.last_used_at, c.revoked_at)
