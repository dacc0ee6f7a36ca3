"""Shared budgets above runs: a team's, an API token's, a workflow's, optionally per day or month.

A shared budget is a limit in USD on what every run under it spends together, across
processes and machines. Its definition is a row of the SQL table `budgets` (managed by
`budgetflow budgets create | list | delete`); its money is in Redis, next to the run
ledgers and in the same units (integer nano-USD), one hash per budget and window
(`storage.redis_keys.budget_totals_key`). A run's reservation is taken from the run
and from every budget above it in one Lua script (`storage.shared_ledger`), so none of
them is ever exceeded. See `docs/budgets.md`.

Windows are UTC calendar windows: a `day` budget's counters are those of the day
(`2026-01-31`), a `month` budget's those of the month (`2026-01`); a budget without a
window has one counter forever. A reservation is settled in the window it was made in.

The SQL functions are synchronous (blocking database I/O; async callers run them on a
thread) and take a database URL or an `Engine`; they do not migrate.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, cast, get_args

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from orchestrator.errors import BudgetExhausted, ConfigError
from orchestrator.events import SharedBudgetView
from orchestrator.ledger import nano_to_usd, usd_to_nano
from storage._engine import make_engine, storage_error
from storage.models import Budget
from storage.redis_keys import budget_totals_key

__all__ = [
    "DEFAULT_CROSS_AT",
    "ON_CROSS",
    "SCOPE_KINDS",
    "WINDOWS",
    "BudgetScope",
    "OnCross",
    "RunScope",
    "ScopeKind",
    "SharedBudget",
    "SharedBudgetPaused",
    "Window",
    "budgets_for",
    "check_budget",
    "create_budget",
    "delete_budget",
    "list_budgets",
    "paused_by",
    "read_budget_states",
]

ScopeKind = Literal["team", "token", "workflow"]
"""What a budget is above: a team's runs, an API token's, or a workflow's."""
Window = Literal["day", "month"]
"""A UTC calendar window."""
OnCross = Literal["none", "downgrade", "pause"]
"""What happens once spend passes `cross_at` of the limit: nothing more than the events,
the runs under it plan with their cheapest models only, or new runs under it are refused."""

SCOPE_KINDS: Final[tuple[ScopeKind, ...]] = get_args(ScopeKind)
"""Every scope kind."""
WINDOWS: Final[tuple[Window, ...]] = get_args(Window)
"""Every window."""
ON_CROSS: Final[tuple[OnCross, ...]] = get_args(OnCross)
"""Every action."""
DEFAULT_CROSS_AT: Final = 0.95
"""Where `on_cross` applies by default: the last threshold event (95 %)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_WINDOW_KEEP = timedelta(days=40)
"""How long a window's counters stay in Redis after the window ends (for `budgets list`)."""


@dataclass(frozen=True, kw_only=True)
class BudgetScope:
    """What a budget is above, written `team:T`, `token:ID` or `workflow:W`."""

    kind: ScopeKind
    """Team, API token or workflow."""
    value: str
    """The team's name, the token's id, or the workflow's name."""

    @classmethod
    def parse(cls, text: str) -> BudgetScope:
        """`team:research` -> `BudgetScope(kind="team", value="research")`.

        Raises:
            ConfigError: not `KIND:VALUE` with a known kind and a value.
        """
        kind, sep, value = text.strip().partition(":")
        if not sep or kind not in SCOPE_KINDS or not value.strip():
            raise ConfigError(
                f"budget scope `{text}` is not `team:NAME`, `token:ID` or `workflow:NAME`;"
                " e.g. `--scope team:research`"
            )
        return cls(kind=kind, value=value.strip())

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True, kw_only=True)
class RunScope:
    """Who a run belongs to: which budgets are above it."""

    workflow: str
    """The workflow's name."""
    team: str | None = None
    """The team running it (`BUDGETFLOW_TEAM`); `None`: no team."""
    token: str | None = None
    """The id of the API token that submitted it; `None`: not submitted through the API."""

    def scopes(self) -> list[BudgetScope]:
        """The scopes the run is in."""
        found = [BudgetScope(kind="workflow", value=self.workflow)]
        if self.team:
            found.append(BudgetScope(kind="team", value=self.team))
        if self.token:
            found.append(BudgetScope(kind="token", value=self.token))
        return found


@dataclass(frozen=True, kw_only=True)
class SharedBudget:
    """A shared budget's definition."""

    budget_id: str
    """Random hex id; keys its counters in Redis."""
    name: str
    """Unique name; the `budget` label of its metrics."""
    scope: BudgetScope
    """The runs it is above."""
    limit_nano: int
    """Its limit per window (or forever), nano-USD."""
    window: Window | None = None
    """`day` or `month` (UTC); `None`: one window forever."""
    on_cross: OnCross = "none"
    """What happens once spend passes `cross_at` of the limit."""
    cross_at: float = DEFAULT_CROSS_AT
    """Fraction of the limit where `on_cross` applies."""
    created_at: datetime | None = None
    """When it was defined (UTC)."""

    @property
    def limit_usd(self) -> Decimal:
        """Its limit, USD."""
        return nano_to_usd(self.limit_nano)

    def window_id(self, now: datetime) -> str:
        """The window `now` (UTC) falls in: `2026-01-31`, `2026-01`, or `` without a window."""
        at = now.astimezone(UTC)
        if self.window == "day":
            return at.strftime("%Y-%m-%d")
        if self.window == "month":
            return at.strftime("%Y-%m")
        return ""

    def key(self, now: datetime) -> str:
        """The Redis key of its counters in the window `now` falls in."""
        window = self.window_id(now)
        return budget_totals_key(self.budget_id, window or "all")

    def expire_in(self, now: datetime) -> int:
        """Seconds from `now` until the counters of `now`'s window may go (40 days after it
        ends); 0: never. Relative, so a skewed clock cannot make Redis drop live counters."""
        at = now.astimezone(UTC)
        if self.window == "day":
            end = datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)
        elif self.window == "month":
            end = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
        else:
            return 0
        return max(1, int((end + _WINDOW_KEEP - at).total_seconds()))

    def crossed(self, view: SharedBudgetView) -> bool:
        """Whether spend in `view` has passed `cross_at` of the limit (where `on_cross` applies)."""
        return view.spent_nano >= self.cross_at * view.limit_nano


class SharedBudgetPaused(BudgetExhausted):
    """A budget above the run is set to pause new runs, and its spend passed that point.

    Attributes:
        budget: the budget's name.
    """

    def __init__(self, message: str, *, budget: str) -> None:
        super().__init__(message)
        self.budget = budget


def check_budget(
    *, name: str, scope: str, limit_usd: Decimal | str, window: str | None, on_cross: str, cross_at: float
) -> tuple[str, BudgetScope, int, Window | None, OnCross]:
    """Check a new budget's definition without a database.

    Raises:
        ConfigError: which value is wrong and what to give instead.
    """
    from storage.redis_ledger import MAX_LEDGER_NANO

    clean = name.strip()
    if not _NAME.fullmatch(clean):
        raise ConfigError(
            f"budget name `{name}` must be 1 to 64 letters, digits, `_`, `.` or `-` (starting with a"
            " letter or digit), e.g. `research-daily`"
        )
    parsed = BudgetScope.parse(scope)
    try:
        limit = Decimal(str(limit_usd))
    except InvalidOperation:
        raise ConfigError(f"budget limit `{limit_usd}` is not a number of USD, e.g. `25` or `0.50`") from None
    limit_nano = usd_to_nano(limit) if limit.is_finite() else 0
    if not 0 < limit_nano <= MAX_LEDGER_NANO:
        raise ConfigError(
            f"budget limit `{limit_usd}` USD must be positive and at most {MAX_LEDGER_NANO} nano-USD"
        )
    if window is not None and window not in WINDOWS:
        raise ConfigError(f"budget window `{window}` is not `day` or `month` (UTC); leave it out for none")
    if on_cross not in ON_CROSS:
        raise ConfigError(f"--on-cross `{on_cross}` is not one of {', '.join(ON_CROSS)}")
    if not 0 < cross_at <= 1:
        raise ConfigError(f"--cross-at {cross_at} must be a fraction of the limit in (0, 1], e.g. 0.95")
    return clean, parsed, limit_nano, window, on_cross


@contextlib.contextmanager
def _connected(target: str | URL | Engine, action: str) -> Iterator[sa.Connection]:
    owned = not isinstance(target, Engine)
    engine = make_engine(target) if not isinstance(target, Engine) else target
    try:
        with engine.begin() as connection:
            yield connection
    except IntegrityError:
        raise
    except SQLAlchemyError as error:
        raise storage_error(action, engine, error) from error
    finally:
        if owned:
            engine.dispose()


_TABLE: Final = cast(sa.Table, Budget.__table__)


def _budget(row: sa.Row[Any]) -> SharedBudget:
    return SharedBudget(
        budget_id=row.id,
        name=row.name,
        scope=BudgetScope(kind=row.scope_kind, value=row.scope_value),
        limit_nano=usd_to_nano(row.limit_usd),
        window=row.window,
        on_cross=row.on_cross,
        cross_at=row.cross_at,
        created_at=row.created_at,
    )


def create_budget(
    target: str | URL | Engine,
    *,
    name: str,
    scope: str,
    limit_usd: Decimal | str,
    window: str | None = None,
    on_cross: str = "none",
    cross_at: float = DEFAULT_CROSS_AT,
    now: datetime | None = None,
) -> SharedBudget:
    """Define a shared budget.

    Raises:
        ConfigError: a value is invalid, or a budget of that name exists.
        StorageError: the database cannot be written.
    """
    clean, parsed, limit_nano, checked_window, action = check_budget(
        name=name, scope=scope, limit_usd=limit_usd, window=window, on_cross=on_cross, cross_at=cross_at
    )
    budget = SharedBudget(
        budget_id=secrets.token_hex(8),
        name=clean,
        scope=parsed,
        limit_nano=limit_nano,
        window=checked_window,
        on_cross=action,
        cross_at=cross_at,
        created_at=now or datetime.now(UTC),
    )
    try:
        with _connected(target, "define a budget") as connection:
            connection.execute(
                sa.insert(_TABLE).values(
                    id=budget.budget_id,
                    name=budget.name,
                    scope_kind=parsed.kind,
                    scope_value=parsed.value,
                    limit_usd=budget.limit_usd,
                    window=checked_window,
                    on_cross=action,
                    cross_at=cross_at,
                    created_at=budget.created_at,
                )
            )
    except IntegrityError:
        raise ConfigError(
            f"a budget named `{clean}` exists; pick another name or delete it first"
            f" (`budgetflow budgets delete {clean}`)"
        ) from None
    return budget


def list_budgets(target: str | URL | Engine) -> list[SharedBudget]:
    """Every budget, by name."""
    with _connected(target, "list budgets") as connection:
        rows = connection.execute(sa.select(_TABLE).order_by(_TABLE.c.name)).all()
    return [_budget(row) for row in rows]


def delete_budget(target: str | URL | Engine, name: str) -> SharedBudget:
    """Delete the budget `name`; runs started later are no longer under it.

    Runs already under it keep their holds in it until they settle. Its counters stay in
    Redis (a windowed budget's expire 40 days after their window).

    Raises:
        ConfigError: no budget has that name.
    """
    with _connected(target, "delete a budget") as connection:
        row = connection.execute(sa.select(_TABLE).where(_TABLE.c.name == name.strip())).first()
        if row is None:
            raise ConfigError(f"no budget is named `{name}`; see `budgetflow budgets list`")
        connection.execute(sa.delete(_TABLE).where(_TABLE.c.id == row.id))
    return _budget(row)


def budgets_for(target: str | URL | Engine, run: RunScope) -> list[SharedBudget]:
    """The budgets above a run of `run`'s scope, by name."""
    scopes = run.scopes()
    match = sa.or_(*((_TABLE.c.scope_kind == s.kind) & (_TABLE.c.scope_value == s.value) for s in scopes))
    with _connected(target, "read the budgets above a run") as connection:
        rows = connection.execute(sa.select(_TABLE).where(match).order_by(_TABLE.c.name)).all()
    return [_budget(row) for row in rows]


async def read_budget_states(
    client: Any, budgets: Sequence[SharedBudget], *, now: datetime
) -> list[SharedBudgetView]:
    """Each budget's counters in the window `now` falls in (one round trip; nothing held).

    Args:
        client: an async Redis client.
        budgets: the budgets to read.
        now: the moment whose windows to read (UTC).
    """
    if not budgets:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for budget in budgets:
            pipe.hmget(budget.key(now), "spent", "reserved")
        replies = await pipe.execute()
    return [
        SharedBudgetView(
            name=budget.name,
            window=budget.window_id(now),
            limit_nano=budget.limit_nano,
            spent_nano=int(spent or 0),
            reserved_nano=int(reserved or 0),
        )
        for budget, (spent, reserved) in zip(budgets, replies, strict=True)
    ]


def paused_by(
    budgets: Sequence[SharedBudget], states: Sequence[SharedBudgetView]
) -> SharedBudgetPaused | None:
    """The error that refuses a new run, if a `pause` budget above it has passed its point."""
    for budget, state in zip(budgets, states, strict=True):
        if budget.on_cross == "pause" and budget.crossed(state):
            window = f" in window {state.window}" if state.window else ""
            return SharedBudgetPaused(
                f"budget `{budget.name}` ({budget.scope}) has spent {state.spent_usd} of {state.limit_usd}"
                f" USD{window}, past its pause point ({budget.cross_at:.0%}), so new runs under it are"
                " refused; raise its limit (delete and define it again), wait for its next window, or"
                " run outside its scope",
                budget=budget.name,
            )
    return None
