"""InProcessLedger: the invariant under heavy concurrency, and its arithmetic against a model."""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from orchestrator.ledger import InProcessLedger, LedgerSnapshot, Reservation


@dataclass
class Tally:
    """What the workers saw."""

    charged: int = 0
    actual: int = 0
    refused: int = 0
    overruns: int = 0


def _actual_cost(rng: random.Random, amount: int) -> int:
    """Usually at most the reservation; one time in five above it (a provider ignored max_tokens)."""
    if rng.random() < 0.2:
        return rng.randint(amount + 1, 3 * amount + 1)
    return rng.randint(0, amount)


def _check(snap: LedgerSnapshot, budget: int) -> None:
    assert snap.spent_nano >= 0 and snap.reserved_nano >= 0
    assert snap.spent_nano + snap.reserved_nano <= budget, snap


async def test_thousands_of_concurrent_tasks_never_overspend() -> None:
    budget = 5_000_000
    ledger = InProcessLedger(budget)
    tally = Tally()
    rng = random.Random(20251122)
    plans = [(rng.randint(1, 10_000), rng.random(), random.Random(rng.random())) for _ in range(3000)]

    async def worker(amount: int, pause: float, own: random.Random) -> None:
        reservation = await ledger.reserve(amount)
        if reservation is None:
            tally.refused += 1
            return
        _check(await ledger.snapshot(), budget)
        for _ in range(int(pause * 30)):  # interleave with the other tasks
            await asyncio.sleep(0)
        actual = _actual_cost(own, amount)
        charged = await ledger.settle(reservation, actual)
        _check(await ledger.snapshot(), budget)
        tally.charged += charged
        tally.actual += actual
        tally.overruns += actual > amount

    done = asyncio.Event()
    snapshots = 0

    async def watch() -> None:
        nonlocal snapshots
        while not done.is_set():
            _check(await ledger.snapshot(), budget)
            snapshots += 1
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(worker(*plan) for plan in plans))
    done.set()
    await watcher

    final = ledger.snapshot_now()
    _check(final, budget)
    assert snapshots > 10
    assert final.reserved_nano == 0
    assert final.spent_nano == tally.charged
    assert final.overrun_nano == tally.actual - tally.charged
    assert tally.refused > 0 and tally.overruns > 0  # the budget was contended and overrun


def test_threads_never_overspend() -> None:
    budget = 2_000_000
    ledger = InProcessLedger(budget)
    stop = threading.Event()
    violations: list[LedgerSnapshot] = []

    def watch() -> None:
        while not stop.is_set():
            snap = ledger.snapshot_now()
            if snap.spent_nano + snap.reserved_nano > budget:
                violations.append(snap)

    def worker(seed: int) -> tuple[int, int]:
        rng = random.Random(seed)
        charged = actual = 0
        for _ in range(400):
            amount = rng.randint(1, 5_000)
            reservation = ledger.reserve_now(amount)
            if reservation is None:
                continue
            cost = _actual_cost(rng, amount)
            charged += ledger.settle_now(reservation, cost)
            actual += cost
        return charged, actual

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(worker, range(8)))
    finally:
        stop.set()
        watcher.join()
    final = ledger.snapshot_now()
    assert violations == []
    assert final.reserved_nano == 0
    assert final.spent_nano == sum(c for c, _ in results)
    assert final.overrun_nano == sum(a for _, a in results) - final.spent_nano


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="budget must be positive"):
        InProcessLedger(0)
    ledger = InProcessLedger(100)
    with pytest.raises(ValueError, match="negative"):
        ledger.reserve_now(-1)
    reservation = ledger.reserve_now(10)
    assert reservation is not None
    with pytest.raises(ValueError, match="negative"):
        ledger.settle_now(reservation, -1)
    ledger.settle_now(reservation, 5)
    with pytest.raises(ValueError, match="unknown or settled"):
        ledger.settle_now(reservation, 5)


@dataclass
class _Model:
    """The ledger's rules written out plainly: what the implementation must agree with."""

    budget: int
    spent: int = 0
    overrun: int = 0
    held: dict[str, int] = field(default_factory=dict)

    @property
    def reserved(self) -> int:
        return sum(self.held.values())

    def fits(self, amount: int) -> bool:
        return self.spent + self.reserved + amount <= self.budget

    def settle(self, rid: str, actual: int) -> int:
        amount = self.held.pop(rid)
        # At or under the reservation it always fits; above it, only what the budget has left.
        charged = actual if actual <= amount else min(actual, self.budget - self.spent - self.reserved)
        self.spent += charged
        self.overrun += actual - charged
        return charged


class LedgerMachine(RuleBasedStateMachine):
    """Random sequences of reserve and settle against the model."""

    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.ledger: InProcessLedger | None = None
        self.model = _Model(budget=0)

    @rule(budget=st.integers(min_value=1, max_value=10_000))
    def start(self, budget: int) -> None:
        if self.ledger is None:
            self.ledger = InProcessLedger(budget)
            self.model = _Model(budget=budget)

    @rule(target=reservations, amount=st.integers(min_value=0, max_value=4_000))
    def reserve(self, amount: int) -> Reservation | None:
        if self.ledger is None:
            return None
        fits = self.model.fits(amount)
        reservation = self.ledger.reserve_now(amount)
        assert (reservation is not None) == fits
        if reservation is not None:
            assert reservation.amount_nano == amount
            assert reservation.reservation_id not in self.model.held
            self.model.held[reservation.reservation_id] = amount
        return reservation

    @rule(reservation=consumes(reservations), actual=st.integers(min_value=0, max_value=12_000))
    def settle(self, reservation: Reservation | None, actual: int) -> None:
        if self.ledger is None or reservation is None:
            return
        assert self.ledger.settle_now(reservation, actual) == self.model.settle(
            reservation.reservation_id, actual
        )

    @invariant()
    def totals_match_the_model(self) -> None:
        if self.ledger is None:
            return
        snap = self.ledger.snapshot_now()
        assert snap == LedgerSnapshot(
            budget_nano=self.model.budget,
            spent_nano=self.model.spent,
            reserved_nano=self.model.reserved,
            overrun_nano=self.model.overrun,
        )
        assert snap.spent_nano + snap.reserved_nano <= snap.budget_nano
        assert snap.available_nano >= 0


LedgerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLedgerMachine = LedgerMachine.TestCase
