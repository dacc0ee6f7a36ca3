"""A run's own view of its money: every reserve and settle passes through, and is counted.

Events carry the run's spent, reserved and overrun amounts (`orchestrator.events.LedgerView`)
at the moment they happen. Asking the ledger each time would cost a Redis round trip per
event on a shared ledger; the run knows its own totals instead, from what the ledger
answered to each of its reservations and settlements. For a ledger that holds one run's
budget, as every run's does, the two agree exactly.
"""

from __future__ import annotations

from orchestrator.events import LedgerView
from orchestrator.ledger import Ledger, LedgerSnapshot, Reservation

__all__ = ["TallyLedger"]


class TallyLedger:
    """A `Ledger` that forwards to another and keeps the run's own totals."""

    def __init__(self, inner: Ledger, budget_nano: int) -> None:
        """Args:
        inner: the ledger that holds the money.
        budget_nano: the run's budget.
        """
        self._inner = inner
        self.budget_nano = budget_nano
        self.spent_nano = 0
        self.reserved_nano = 0
        self.overrun_nano = 0
        self._view: LedgerView | None = None

    async def reserve(self, amount_nano: int) -> Reservation | None:
        """Forward; count the hold if it was made."""
        reservation = await self._inner.reserve(amount_nano)
        if reservation is not None:
            self.reserved_nano += reservation.amount_nano
            self._view = None
        return reservation

    async def settle(self, reservation: Reservation, actual_nano: int) -> int:
        """Forward; count the charge and any overrun."""
        charged = await self._inner.settle(reservation, actual_nano)
        self.reserved_nano -= reservation.amount_nano
        self.spent_nano += charged
        self.overrun_nano += max(0, actual_nano - charged)
        self._view = None
        return charged

    async def snapshot(self) -> LedgerSnapshot:
        """The ledger's own totals (one read)."""
        return await self._inner.snapshot()

    def view(self) -> LedgerView:
        """The run's totals now, without I/O (one view is shared until the money moves)."""
        if self._view is None:
            self._view = LedgerView(
                budget_nano=self.budget_nano,
                spent_nano=self.spent_nano,
                reserved_nano=self.reserved_nano,
                overrun_nano=self.overrun_nano,
            )
        return self._view
