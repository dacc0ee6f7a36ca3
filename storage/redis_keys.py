"""Every Redis key budgetflow uses, in one place.

All keys start with `PREFIX`. Keys of one run carry the run id in braces,
a Redis Cluster hash tag, so a run's keys live on one slot and a Lua script
may touch all of them.
"""

from __future__ import annotations

__all__ = [
    "LEDGER_PREFIX",
    "PREFIX",
    "ledger_held_key",
    "ledger_totals_key",
]

PREFIX = "budgetflow:"
"""Root of every budgetflow key."""

LEDGER_PREFIX = f"{PREFIX}ledger:"
"""Budget ledgers: `budgetflow:ledger:{<run_id>}:totals` and `...:held`."""


def _check_run_id(run_id: str) -> str:
    if not run_id or any(c in run_id for c in "{}"):
        raise ValueError(f"run id `{run_id}` cannot be used in a Redis key (empty or has braces)")
    return run_id


def ledger_totals_key(run_id: str) -> str:
    """Hash of a run's ledger totals: `budget`, `spent`, `reserved`, `overrun`."""
    return f"{LEDGER_PREFIX}{{{_check_run_id(run_id)}}}:totals"


def ledger_held_key(run_id: str) -> str:
    """Hash of a run's open reservations: reservation id -> nano-USD held."""
    return f"{LEDGER_PREFIX}{{{_check_run_id(run_id)}}}:held"
