"""Every Redis key budgetflow uses, in one place.

All keys start with `PREFIX`. Keys of one run carry the run id in braces,
a Redis Cluster hash tag, so a run's keys live on one slot and a Lua script
may touch all of them.
"""

from __future__ import annotations

__all__ = [
    "BUDGET_PREFIX",
    "EVENTS_PREFIX",
    "LEDGER_PREFIX",
    "PREFIX",
    "budget_totals_key",
    "events_key",
    "ledger_closed_key",
    "ledger_held_key",
    "ledger_keys",
    "ledger_shared_key",
    "ledger_totals_key",
]

PREFIX = "budgetflow:"
"""Root of every budgetflow key."""

LEDGER_PREFIX = f"{PREFIX}ledger:"
"""Budget ledgers: `budgetflow:ledger:{<run_id>}:totals`, `...:held` and `...:closed`."""


EVENTS_PREFIX = f"{PREFIX}events:"
"""Runs' event streams, relayed across processes: `budgetflow:events:{<run_id>}`."""


def _check_run_id(run_id: str) -> str:
    if not run_id or any(c in run_id for c in "{}"):
        raise ValueError(f"run id `{run_id}` cannot be used in a Redis key (empty or has braces)")
    return run_id


def ledger_totals_key(run_id: str) -> str:
    """Hash of a run's ledger totals and identity.

    Fields: `budget`, `spent`, `reserved`, `overrun` (nano-USD), `epoch` (the
    random id of this incarnation of the ledger), `seq` (bumped by every write)
    and, once a rollback was detected, `broken` (why the ledger refuses work).
    """
    return f"{LEDGER_PREFIX}{{{_check_run_id(run_id)}}}:totals"


def ledger_held_key(run_id: str) -> str:
    """Hash of a run's open reservations: reservation id -> nano-USD held."""
    return f"{LEDGER_PREFIX}{{{_check_run_id(run_id)}}}:held"


def ledger_closed_key(run_id: str) -> str:
    """Hash of a run's closed reservation ids -> outcome.

    The outcome is `refused` (did not fit), `released` (closed before it was
    held) or `<actual>:<charged>` (settled), so a retried or late request
    with the same id gets the first answer instead of acting twice.
    """
    return f"{LEDGER_PREFIX}{{{_check_run_id(run_id)}}}:closed"


def ledger_keys(run_id: str) -> list[str]:
    """All keys of a run's ledger, in the order its scripts take them: totals, held, closed."""
    return [ledger_totals_key(run_id), ledger_held_key(run_id), ledger_closed_key(run_id)]


def events_key(run_id: str) -> str:
    """Stream of a run's events (`web.api.relay`): fields `type` and `data` (the event's JSON)."""
    return f"{EVENTS_PREFIX}{{{_check_run_id(run_id)}}}"


BUDGET_PREFIX = f"{PREFIX}budget:"
"""Shared budgets' counters, one hash per budget and window: `budgetflow:budget:{<budget_id>}:<window>`."""


def ledger_shared_key(run_id: str) -> str:
    """Hash of a run's open reservations that are also held in shared budgets: reservation id ->
    the keys of those budgets' counters, newline-separated (`storage.shared_budgets`)."""
    return f"{LEDGER_PREFIX}{{{_check_run_id(run_id)}}}:shared"


def budget_totals_key(budget_id: str, window: str) -> str:
    """Hash of one shared budget's counters in one window (`all`, `d2026-01-31`, `m2026-01`).

    Fields: `limit`, `spent`, `reserved`, `overrun` (nano-USD) and `crossed` (how many of
    `orchestrator.events.BUDGET_THRESHOLDS` spend has passed in this window). Keyed by the
    budget's id, not its name, so a budget deleted and defined again starts from zero.
    """
    if not budget_id or any(c in budget_id for c in "{}:"):
        raise ValueError(f"budget id `{budget_id}` cannot be used in a Redis key (empty, braces or colon)")
    if not window or any(c in window for c in "{}"):
        raise ValueError(f"window `{window}` cannot be used in a Redis key")
    return f"{BUDGET_PREFIX}{{{budget_id}}}:{window}"
