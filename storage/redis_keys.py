"""Every Redis key budgetflow uses, in one place.

All keys start with `PREFIX`. Keys of one run carry the run id in braces,
a Redis Cluster hash tag, so a run's keys live on one slot and a Lua script
may touch all of them.
"""

from __future__ import annotations

__all__ = [
    "LEDGER_PREFIX",
    "PREFIX",
    "ledger_closed_key",
    "ledger_held_key",
    "ledger_keys",
    "ledger_totals_key",
]

PREFIX = "budgetflow:"
"""Root of every budgetflow key."""

LEDGER_PREFIX = f"{PREFIX}ledger:"
"""Budget ledgers: `budgetflow:ledger:{<run_id>}:totals`, `...:held` and `...:closed`."""


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
