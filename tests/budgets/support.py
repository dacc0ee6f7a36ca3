"""Helpers of the shared-budget tests: budgets without a database, and a settable clock."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from storage.shared_budgets import BudgetScope, OnCross, SharedBudget, Window


def budget(
    name: str,
    limit_nano: int,
    *,
    window: Window | None = None,
    on_cross: OnCross = "none",
    cross_at: float = 0.95,
    scope: str = "team:t",
) -> SharedBudget:
    """A budget definition with a fresh id (so its Redis counters are the test's own)."""
    return SharedBudget(
        budget_id=secrets.token_hex(8),
        name=name,
        scope=BudgetScope.parse(scope),
        limit_nano=limit_nano,
        window=window,
        on_cross=on_cross,
        cross_at=cross_at,
    )


class Clock:
    """A UTC clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


DAY_1 = datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)
"""The last second of a day and of a month."""
DAY_2 = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
"""The first second of the next day and month."""
