"""`budgetflow budgets create | list | delete`: shared budgets above runs (see `storage.shared_budgets`).

Definitions live in the database; their money in Redis. `list` shows each budget's
spend and holds in its current window, read from Redis when `BUDGETFLOW_REDIS_URL` is
set (else `-`: without Redis, runs under a shared budget are refused).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from budgetflow._format import command
from budgetflow.settings import Settings

if TYPE_CHECKING:
    from orchestrator.events import SharedBudgetView
    from storage.shared_budgets import SharedBudget

__all__ = ["create_budget", "delete_budget", "list_budgets"]


def _prepared(settings: Settings) -> str:
    """The database URL, its directory created and its schema migrated."""
    from storage._engine import ensure_sqlite_dir
    from storage.migrate import upgrade

    ensure_sqlite_dir(settings.database_url)
    upgrade(settings.database_url)
    return settings.database_url


def create_budget(
    settings: Settings,
    console: Console,
    *,
    name: str,
    scope: str,
    limit_usd: str,
    window: str | None,
    on_cross: str,
    cross_at: float,
) -> int:
    """Define a budget and say what it applies to."""
    from storage import shared_budgets

    # Checked before the database is touched: bad input changes nothing.
    shared_budgets.check_budget(
        name=name, scope=scope, limit_usd=limit_usd, window=window, on_cross=on_cross, cross_at=cross_at
    )
    made = shared_budgets.create_budget(
        _prepared(settings),
        name=name,
        scope=scope,
        limit_usd=limit_usd,
        window=window,
        on_cross=on_cross,
        cross_at=cross_at,
    )
    per = f" per {made.window} (UTC)" if made.window else ""
    action = "" if made.on_cross == "none" else f"; past {made.cross_at:.0%} it will {made.on_cross}"
    console.print(
        f"budget `{escape(made.name)}`: {made.limit_usd} USD{per} above the runs of"
        f" `{escape(str(made.scope))}`{action}",
        highlight=False,
    )
    if not settings.redis_url:
        console.print(
            "Shared budgets are kept in Redis: set `BUDGETFLOW_REDIS_URL`, or runs under this one"
            " are refused.",
            style="yellow",
            highlight=False,
        )
    return 0


def list_budgets(settings: Settings, console: Console) -> int:
    """Print every budget with its spend and holds now (from Redis)."""
    from budgetflow.show import missing_database
    from storage import shared_budgets

    missing = missing_database(settings.database_url)
    found = [] if missing is not None else shared_budgets.list_budgets(_prepared(settings))
    if not found:
        create = command(
            settings, "budgets", "create", "--name", "NAME", "--scope", "team:T", "--limit-usd", "X"
        )
        console.print(f"no budgets; define one with `{escape(create)}`", highlight=False)
        return 0
    now = datetime.now(UTC)
    states = None
    if settings.redis_url:
        states = asyncio.run(_states(settings.redis_url, found, now))
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header, justify in (
        ("name", "left"),
        ("scope", "left"),
        ("window", "left"),
        ("limit USD", "right"),
        ("spent USD", "right"),
        ("reserved USD", "right"),
        ("used", "right"),
        ("on cross", "left"),
    ):
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for i, budget in enumerate(found):
        window = budget.window_id(now) if budget.window else "-"
        if states is None:
            spent = reserved = used = "-"
        else:
            state = states[i]
            spent, reserved = str(state.spent_usd), str(state.reserved_usd)
            used = f"{Decimal(state.spent_nano) / Decimal(state.limit_nano):.0%}"
        action = "none" if budget.on_cross == "none" else f"{budget.on_cross} at {budget.cross_at:.0%}"
        table.add_row(
            escape(budget.name),
            escape(str(budget.scope)),
            window,
            str(budget.limit_usd),
            spent,
            reserved,
            used,
            action,
        )
    console.print(table)
    if states is None:
        console.print("spend is in Redis: set `BUDGETFLOW_REDIS_URL` to see it", style="dim", highlight=False)
    return 0


async def _states(url: str, budgets: list[SharedBudget], now: datetime) -> list[SharedBudgetView]:
    from redis.asyncio import Redis

    from storage.shared_budgets import read_budget_states

    client = Redis.from_url(url)
    try:
        return await read_budget_states(client, budgets, now=now)
    finally:
        await client.aclose()


def delete_budget(settings: Settings, console: Console, *, name: str) -> int:
    """Delete a budget: runs started from now on are not under it."""
    from storage import shared_budgets

    gone = shared_budgets.delete_budget(_prepared(settings), name)
    console.print(
        f"deleted budget `{escape(gone.name)}` ({escape(str(gone.scope))}); runs already under it keep"
        " their holds in it until they settle",
        highlight=False,
    )
    return 0
