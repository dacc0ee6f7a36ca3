"""`budgetflow tokens create | list | revoke`: the HTTP API's tokens (see `storage.tokens`).

`create` prints the token once: only its hash is stored, so it can never be
shown again. `list` shows what is stored about each token, never a secret.
`revoke` ends a token at once, and the browser sessions opened with it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from budgetflow._format import command
from budgetflow.settings import Settings
from orchestrator.errors import ConfigError

__all__ = ["create_token", "list_tokens", "parse_lifetime", "revoke_token"]

_LIFETIME = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_MAX_LIFETIME = timedelta(days=3660)
_DATE_WIDTH = len("2026-01-31 12:00")
_GAP = 2
"""Spaces between two columns of a borderless table."""


def parse_lifetime(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `3600s` as a `timedelta`.

    Raises:
        ConfigError: not a whole number with one of those units, zero, or over ten years.
    """
    match = _LIFETIME.fullmatch(text.strip().lower())
    if match is None:
        raise ConfigError(
            f"--expires-in `{text}` is not a lifetime; use a whole number and a unit s, m, h, d or w,"
            " e.g. `30d` or `12h` (leave it out for a token that works until revoked)"
        )
    lifetime = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if lifetime <= timedelta(0) or lifetime > _MAX_LIFETIME:
        raise ConfigError(
            f"--expires-in `{text}` must be more than zero and at most ten years; leave it out for a"
            " token that works until revoked"
        )
    return lifetime


def _when(moment: datetime | None, empty: str) -> str:
    return empty if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _prepared(settings: Settings) -> str:
    """The database URL, its directory created and its schema migrated."""
    from storage._engine import ensure_sqlite_dir
    from storage.migrate import upgrade

    ensure_sqlite_dir(settings.database_url)
    upgrade(settings.database_url)
    return settings.database_url


def create_token(
    settings: Settings, console: Console, *, name: str, scope: str, expires_in: str | None
) -> int:
    """Create a token and print it, once, with how to use and revoke it."""
    from storage import tokens

    lifetime = None if expires_in is None else parse_lifetime(expires_in)
    # Checked before the database is touched: bad input changes nothing.
    tokens.check_new_token(name=name, scopes=[scope], expires_in=lifetime)
    new = tokens.create_token(_prepared(settings), name=name, scopes=[scope], expires_in=lifetime)
    info = new.info
    expiry = "never expires" if info.expires_at is None else f"expires {_when(info.expires_at, '')} UTC"
    console.print(
        f"created token `{escape(info.name)}` (id {info.token_id}), scope `{scope}`, {expiry}:",
        highlight=False,
    )
    console.print()
    console.print(new.token, markup=False, highlight=False, soft_wrap=True)
    console.print()
    console.print(
        "Copy it now: it will not be shown again (only its hash is stored).",
        style="bold yellow",
        highlight=False,
    )
    console.print(
        f"Send it as `Authorization: Bearer <token>`; revoke it with"
        f" `{escape(command(settings, 'tokens', 'revoke', str(info.token_id)))}`.",
        style="dim",
        highlight=False,
    )
    return 0


def list_tokens(settings: Settings, console: Console, *, include_inactive: bool) -> int:
    """Print the tokens (live ones, or all), never their secrets."""
    from budgetflow.show import missing_database
    from storage import tokens

    missing = missing_database(settings.database_url)
    found = (
        []
        if missing is not None
        else tokens.list_tokens(_prepared(settings), include_inactive=include_inactive)
    )
    if not found:
        scope = "" if include_inactive else "live "
        create = escape(command(settings, "tokens", "create", "--name", "NAME", "--scope", "read"))
        console.print(f"no {scope}tokens; create one with `{create}`", highlight=False)
        return 0
    now = datetime.now(UTC)
    id_width = max(2, *(len(str(info.token_id)) for info in found))
    scope_width = max(5, *(len(" ".join(info.scopes)) for info in found))
    fixed = id_width + scope_width + 3 * _DATE_WIDTH + 5 * _GAP
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("id", justify="right", no_wrap=True, width=id_width)
    table.add_column("name", overflow="ellipsis", no_wrap=True, width=max(8, console.width - fixed))
    table.add_column("scope", no_wrap=True, width=scope_width)
    for header in ("created UTC", "expires UTC", "last used UTC"):
        table.add_column(header, no_wrap=True, width=_DATE_WIDTH)
    for info in found:
        if info.revoked_at is not None:
            expires = "[red]revoked[/]"
        elif not info.active(now):
            expires = "[yellow]expired[/]"
        else:
            expires = _when(info.expires_at, "never")
        table.add_row(
            str(info.token_id),
            escape(info.name),
            " ".join(info.scopes),
            _when(info.created_at, ""),
            expires,
            _when(info.last_used_at, "never"),
        )
    console.print(table)
    return 0


def revoke_token(settings: Settings, console: Console, *, token_id: str) -> int:
    """Revoke token `token_id` and say so."""
    from budgetflow.show import missing_database
    from storage import tokens

    if not token_id.strip().isdigit():
        raise ConfigError(
            f"token id `{token_id}` is not a number; `{command(settings, 'tokens', 'list')}` shows the ids"
        )
    if missing_database(settings.database_url) is not None:
        raise ConfigError(f"no token with id `{token_id.strip()}`: no token was created in this database yet")
    info = tokens.revoke_token(_prepared(settings), int(token_id))
    console.print(
        f"revoked token `{escape(info.name)}` (id {info.token_id}) at {_when(info.revoked_at, '')} UTC;"
        " requests and browser sessions using it are refused from now on",
        highlight=False,
    )
    return 0
