"""The budget ledger: reserve before a call, settle after it.

Money is integer nano-USD (1 USD = 10**9), so sums are exact. The
invariant every ledger keeps, under any concurrency:

    spent + reserved <= budget

A call first reserves its worst case (input tokens x input price +
max_tokens x output price); a reservation that does not fit is refused and
the call is not started. When the call ends, the reservation is settled to
the actual cost and the difference returns to the pool. An actual cost above
the reservation (a provider that ignored max_tokens) is charged as far as
the budget allows and the excess is counted in `overrun_nano`, never hidden.

`InProcessLedger` serves one process; `storage.RedisLedger` shares one
budget across workers with the same semantics in one server-side script.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

__all__ = [
    "NANO_PER_USD",
    "InProcessLedger",
    "Ledger",
    "LedgerSnapshot",
    "Reservation",
    "nano_to_usd",
    "usd_to_nano",
]

NANO_PER_USD = 1_000_000_000
"""Ledger units per US dollar."""


def usd_to_nano(usd: Decimal | float | str) -> int:
    """Convert USD to nano-USD, rounding down (a budget never grows by rounding)."""
    value = Decimal(str(usd)) * NANO_PER_USD
    return int(value.to_integral_value(rounding="ROUND_FLOOR"))


def nano_to_usd(nano: int) -> Decimal:
    """Convert nano-USD to exact USD."""
    return Decimal(nano) / NANO_PER_USD


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """Money held for one call until it is settled."""

    reservation_id: str
    """Unique within the ledger."""
    amount_nano: int
    """Amount held."""


@dataclass(frozen=True, kw_only=True)
class LedgerSnapshot:
    """The ledger's totals at one moment."""

    budget_nano: int
    """The whole budget."""
    spent_nano: int
    """Settled spend."""
    reserved_nano: int
    """Held by calls in flight."""
    overrun_nano: int = 0
    """Charges above their reservation that did not fit in the budget."""

    @property
    def available_nano(self) -> int:
        """What a new reservation may take."""
        return self.budget_nano - self.spent_nano - self.reserved_nano


class Ledger(Protocol):
    """Reserve-then-settle accounting for one run's budget. All methods are async."""

    async def reserve(self, amount_nano: int) -> Reservation | None:
        """Hold `amount_nano` if it fits, else return `None` (nothing changes)."""
        ...

    async def settle(self, reservation: Reservation, actual_nano: int) -> int:
        """Release `reservation` and charge `actual_nano`; return what was charged."""
        ...

    async def snapshot(self) -> LedgerSnapshot:
        """Current totals."""
        ...


class InProcessLedger:
    """A ledger for one process; safe across asyncio tasks and threads."""

    def __init__(self, budget_nano: int, *, spent_nano: int = 0) -> None:
        """A ledger for `budget_nano`, of which `spent_nano` is already spent (a resumed run)."""
        if budget_nano <= 0:
            raise ValueError(f"budget must be positive, got {budget_nano} nano-USD")
        if spent_nano < 0:
            raise ValueError(f"spent must not be negative, got {spent_nano} nano-USD")
        self._budget = budget_nano
        self._spent = min(spent_nano, budget_nano)
        self._overrun = 0
        self._held: dict[str, int] = {}
        self._reserved = 0
        self._ids = itertools.count()
        self._lock = threading.Lock()

    async def reserve(self, amount_nano: int) -> Reservation | None:
        """Hold `amount_nano` if it fits."""
        return self.reserve_now(amount_nano)

    async def settle(self, reservation: Reservation, actual_nano: int) -> int:
        """Release and charge."""
        return self.settle_now(reservation, actual_nano)

    async def snapshot(self) -> LedgerSnapshot:
        """Current totals."""
        return self.snapshot_now()

    def reserve_now(self, amount_nano: int) -> Reservation | None:
        """Synchronous `reserve`, for callers outside an event loop."""
        if amount_nano < 0:
            raise ValueError(f"cannot reserve a negative amount ({amount_nano})")
        with self._lock:
            if self._spent + self._reserved + amount_nano > self._budget:
                return None
            rid = f"r{next(self._ids)}"
            self._held[rid] = amount_nano
            self._reserved += amount_nano
            return Reservation(reservation_id=rid, amount_nano=amount_nano)

    def settle_now(self, reservation: Reservation, actual_nano: int) -> int:
        """Synchronous `settle`."""
        if actual_nano < 0:
            raise ValueError(f"cannot settle a negative cost ({actual_nano})")
        with self._lock:
            held = self._held.pop(reservation.reservation_id, None)
            if held is None:
                raise ValueError(f"reservation `{reservation.reservation_id}` is unknown or settled")
            self._reserved -= held
            room = self._budget - self._spent - self._reserved
            charged = min(actual_nano, room) if actual_nano > held else actual_nano
            self._overrun += actual_nano - charged
            self._spent += charged
            return charged

    def snapshot_now(self) -> LedgerSnapshot:
        """Synchronous `snapshot`."""
        with self._lock:
            return LedgerSnapshot(
                budget_nano=self._budget,
                spent_nano=self._spent,
                reserved_nano=self._reserved,
                overrun_nano=self._overrun,
            )
