"""Finding runs: filtered, sorted and paged by a cursor, for the HTTP API and the dashboard.

`search_runs` answers one page at a time with keyset pagination: the cursor holds the
sort value and the id of the last run of the page, so the next page starts right after
it with an indexed range scan instead of skipping rows (`runs` has indexes on
`started_at`, `(workflow, started_at)` and `outcome`). Runs recorded while a client
pages neither repeat nor shift the pages after its cursor. Model calls are counted for
the page's runs only.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from orchestrator.errors import ConfigError
from orchestrator.records import CallKind, Outcome
from storage.abandoned import abandoned_cutoff, proven_spend, stale_condition
from storage.models import Call, Run
from storage.queries import RunSummary, _session, _summary

__all__ = ["MAX_PAGE", "RunPage", "RunSort", "search_runs"]

RunSort = Literal["-started_at", "started_at", "-spent_usd", "spent_usd", "-budget_usd", "budget_usd"]
"""Sort orders: a column, `-` first for descending (newest, most expensive first). Ties go by run id."""

MAX_PAGE: Final = 500
"""The largest page `search_runs` returns."""

_COLUMNS: Final = {"started_at": Run.started_at, "spent_usd": Run.spent_usd, "budget_usd": Run.budget_usd}


@dataclass(frozen=True, kw_only=True)
class RunPage:
    """One page of runs."""

    runs: tuple[RunSummary, ...]
    """The runs, in the order asked for."""
    total: int
    """How many runs match the filters, over all pages."""
    next_cursor: str | None
    """Pass it as `cursor` for the next page; `None` on the last one."""


def search_runs(
    target: str | URL | Engine,
    *,
    workflow: str | None = None,
    outcome: Outcome | None = None,
    started_after: datetime | None = None,
    started_before: datetime | None = None,
    sort: RunSort = "-started_at",
    limit: int = 50,
    cursor: str | None = None,
) -> RunPage:
    """The page of runs matching the filters that follows `cursor` (the first page without one).

    Args:
        target: database URL or engine.
        workflow: only runs of this workflow.
        outcome: only runs that ended so (`running` and `abandoned` tell live runs from
            runs whose process died, as `list_runs` does).
        started_after: only runs started at or after this time.
        started_before: only runs started before this time.
        sort: the order (`RunSort`); sorting by spend uses the recorded spend, which for a
            run in progress is its spend so far when it last settled.
        limit: page size, 1 to `MAX_PAGE`.
        cursor: `next_cursor` of the previous page, with the same filters and sort.

    Raises:
        ConfigError: a bad `limit`, `sort` or `cursor` (the message says what to send).
        StorageError: the database cannot be read.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ConfigError(f"`limit` = {limit} is out of range; use 1 to {MAX_PAGE}")
    if sort not in get_args(RunSort):
        raise ConfigError(f"`sort` = `{sort}` is not a sort order; use one of {', '.join(get_args(RunSort))}")
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    column: Any = _COLUMNS[key]
    cutoff = abandoned_cutoff()
    where: list[sa.ColumnElement[bool]] = []
    if workflow is not None:
        where.append(Run.workflow == workflow)
    if outcome is Outcome.ABANDONED:
        where.append(stale_condition(cutoff))
    elif outcome is Outcome.RUNNING:
        where.append(sa.and_(Run.outcome == Outcome.RUNNING.value, sa.not_(stale_condition(cutoff))))
    elif outcome is not None:
        where.append(Run.outcome == outcome.value)
    if started_after is not None:
        where.append(Run.started_at >= started_after)
    if started_before is not None:
        where.append(Run.started_at < started_before)
    page_where = list(where)
    if cursor is not None:
        value, last_id = _read_cursor(cursor, sort)
        after = column < value if descending else column > value
        same = sa.and_(column == value, Run.run_id < last_id if descending else Run.run_id > last_id)
        page_where.append(sa.or_(after, same))
    order = (column.desc(), Run.run_id.desc()) if descending else (column.asc(), Run.run_id.asc())
    stale = sa.case((stale_condition(cutoff), True), else_=False)
    query = sa.select(Run, proven_spend(), stale).where(*page_where).order_by(*order).limit(limit + 1)
    with _session(target) as session:
        rows = session.execute(query).all()
        total = session.scalar(sa.select(sa.func.count()).select_from(Run).where(*where)) or 0
        ids = [run.run_id for run, _, _ in rows[:limit]]
        counts = dict(
            session.execute(
                sa.select(Call.run_id, sa.func.count())
                .where(Call.run_id.in_(ids), Call.kind == CallKind.LLM.value)
                .group_by(Call.run_id)
            ).all()
        )
    runs = tuple(
        _summary(run, calls=int(counts.get(run.run_id, 0)), cost=cost, stale=is_stale)
        for run, cost, is_stale in rows[:limit]
    )
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1][0]
        next_cursor = _write_cursor(sort, getattr(last, key), last.run_id)
    return RunPage(runs=runs, total=int(total), next_cursor=next_cursor)


def _write_cursor(sort: str, value: datetime | Decimal, run_id: str) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    raw = json.dumps([sort, text, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(cursor: str, sort: str) -> tuple[datetime | Decimal, str]:
    bad = ConfigError(
        f"`cursor` = `{cursor[:40]}` is not a cursor of this listing; pass the `next_cursor` of the"
        " previous page, with the same filters and `sort`, or leave it out for the first page"
    )
    try:
        decoded: Sequence[Any] = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not (isinstance(decoded, list) and len(decoded) == 3 and all(isinstance(p, str) for p in decoded)):
        raise bad
    cursor_sort, text, run_id = decoded
    if cursor_sort != sort:
        raise ConfigError(
            f"`cursor` was made for `sort` = `{cursor_sort}`, not `{sort}`; start again without a cursor"
            " when changing the sort"
        )
    try:
        value: datetime | Decimal = (
            datetime.fromisoformat(text) if sort.lstrip("-") == "started_at" else Decimal(text)
        )
    except (ValueError, InvalidOperation):
        raise bad from None
    return value, run_id
