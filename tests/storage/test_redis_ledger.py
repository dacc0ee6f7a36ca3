"""RedisLedger against a real redis-server: the invariant under concurrency, the arithmetic, epochs
and request ids. Faults (restarts, stalls, lost replies, rollbacks) are in `test_redis_faults.py`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import BlockingConnectionPool, Redis

from orchestrator.errors import ConfigError, StorageError
from orchestrator.ledger import InProcessLedger, Ledger, LedgerSnapshot, Reservation
from storage import RedisLedger
from storage.redis_keys import (
    LEDGER_PREFIX,
    ledger_closed_key,
    ledger_held_key,
    ledger_keys,
    ledger_totals_key,
)
from storage.redis_ledger import MAX_LEDGER_NANO, LedgerRetry

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]


def make_client(url: str) -> Redis:
    """A client whose tasks queue for one of a few connections, as a worker's would."""
    return Redis.from_pool(BlockingConnectionPool.from_url(url, max_connections=16, timeout=30))


@dataclass
class Tally:
    """What one group of workers saw."""

    charged: int = 0
    actual: int = 0
    settled: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)


async def churn(ledger: RedisLedger, seed: int, rounds: int, tally: Tally) -> None:
    """Reserve and settle `rounds` times; a fifth of the costs exceed their reservation."""
    rng = random.Random(seed)
    for _ in range(rounds):
        amount = rng.randint(1, 20_000)
        reservation = await ledger.reserve(amount)
        if reservation is None:
            tally.refused += 1
            continue
        await asyncio.sleep(rng.random() * 0.002)
        actual = rng.randint(amount + 1, 3 * amount) if rng.random() < 0.2 else rng.randint(0, amount)
        charged = await ledger.settle(reservation, actual)
        # Not `tally.charged += await ...`: that reads the total before awaiting and loses updates.
        tally.charged += charged
        tally.actual += actual
        tally.settled += 1


def check(snap: LedgerSnapshot, budget: int) -> None:
    assert snap.budget_nano == budget
    assert snap.spent_nano >= 0 and snap.reserved_nano >= 0
    assert snap.spent_nano + snap.reserved_nano <= budget, snap


async def watch(ledger: RedisLedger, budget: int, stop: asyncio.Event) -> int:
    """Check the invariant on snapshots until `stop`; return how many were taken."""
    seen = 0
    while not stop.is_set():
        check(await ledger.snapshot(), budget)
        seen += 1
        await asyncio.sleep(0.001)
    return seen


async def test_many_clients_never_overspend(redis_url: str, run_id: str) -> None:
    budget = 2_000_000
    clients = [make_client(redis_url) for _ in range(4)]
    try:
        created = await RedisLedger.create(clients[0], run_id, budget)
        assert created.epoch is not None
        ledgers = [created] + [await RedisLedger.join(c, run_id, created.epoch) for c in clients[1:]]
        conforming: Ledger = ledgers[0]  # the protocol, checked by mypy
        assert await conforming.snapshot() == LedgerSnapshot(
            budget_nano=budget, spent_nano=0, reserved_nano=0
        )
        tally = Tally()
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(ledgers[0], budget, stop))
        await asyncio.gather(
            *(churn(ledgers[i % len(ledgers)], seed=i, rounds=4, tally=tally) for i in range(400))
        )
        stop.set()
        assert await watcher > 0
        final = await ledgers[1].snapshot()
    finally:
        for client in clients:
            await client.aclose()
    check(final, budget)
    assert final.reserved_nano == 0
    assert final.spent_nano == tally.charged
    assert final.overrun_nano == tally.actual - tally.charged
    assert tally.refused > 0 and tally.settled > 0  # the budget was contended


_WORKER = """
import asyncio, json, sys
from storage import RedisLedger
from tests.storage.test_redis_ledger import Tally, churn, make_client

async def main() -> None:
    url, run_id, epoch, base = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = make_client(url)
    ledger = await RedisLedger.join(client, run_id, epoch)
    tally = Tally()
    await asyncio.gather(*(churn(ledger, seed=base + i, rounds=4, tally=tally) for i in range(150)))
    await client.aclose()
    print(json.dumps({"charged": tally.charged, "actual": tally.actual}))

asyncio.run(main())
"""


async def test_worker_processes_share_one_budget(redis_client: Redis, redis_url: str, run_id: str) -> None:
    budget = 1_500_000
    ledger = await RedisLedger.create(redis_client, run_id, budget)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, redis_url, run_id, str(ledger.epoch), str(1000 * (n + 1)),
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for n in range(2)
    ]  # fmt: skip
    tally = Tally()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(ledger, budget, stop))
    local = asyncio.gather(*(churn(ledger, seed=i, rounds=4, tally=tally) for i in range(150)))
    outputs = await asyncio.gather(*(worker.communicate() for worker in workers))
    await local
    stop.set()
    await watcher
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr.decode()
    reports = [json.loads(out) for out, _ in outputs]
    final = await ledger.snapshot()
    check(final, budget)
    charged = tally.charged + sum(r["charged"] for r in reports)
    actual = tally.actual + sum(r["actual"] for r in reports)
    assert final.reserved_nano == 0
    assert final.spent_nano == charged
    assert final.overrun_nano == actual - charged


@dataclass(frozen=True)
class Reserve:
    amount: int


@dataclass(frozen=True)
class Settle:
    pick: int
    actual: int


@dataclass(frozen=True)
class SettleAgain:
    """Settle a settled reservation again: with its cost (a retry) or another one (a bug)."""

    pick: int
    same_cost: bool


_amounts = st.integers(min_value=0, max_value=1_200)
_ops = st.lists(
    st.one_of(
        st.builds(Reserve, _amounts),
        st.builds(Settle, st.integers(0, 50), st.integers(0, 2_000)),
        st.builds(SettleAgain, st.integers(0, 50), st.booleans()),
    ),
    max_size=25,
)


@dataclass(frozen=True)
class _Closed:
    got: Reservation
    want: Reservation
    actual: int
    charged: int


async def _compare(url: str, run_id: str, budget: int, ops: list[Reserve | Settle | SettleAgain]) -> None:
    client = Redis.from_url(url)
    ledger = await RedisLedger.create(client, run_id, budget)
    try:
        model = InProcessLedger(budget)
        open_: list[tuple[Reservation, Reservation]] = []
        closed: list[_Closed] = []
        for op in ops:
            if isinstance(op, Reserve):
                got, want = await ledger.reserve(op.amount), model.reserve_now(op.amount)
                assert (got is None) == (want is None), op
                if got is not None and want is not None:
                    assert got.amount_nano == want.amount_nano == op.amount
                    open_.append((got, want))
            elif isinstance(op, Settle) and open_:
                got, want = open_.pop(op.pick % len(open_))
                charged = await ledger.settle(got, op.actual)
                assert charged == model.settle_now(want, op.actual), op
                closed.append(_Closed(got=got, want=want, actual=op.actual, charged=charged))
            elif isinstance(op, SettleAgain) and closed:
                done = closed[op.pick % len(closed)]
                with pytest.raises(ValueError, match="unknown or settled"):
                    model.settle_now(done.want, done.actual)
                if op.same_cost:  # a retry: the first answer, nothing charged again
                    assert await ledger.settle(done.got, done.actual) == done.charged
                else:
                    with pytest.raises(ValueError, match=f"already settled for a cost of {done.actual} "):
                        await ledger.settle(done.got, done.actual + 1)
            assert await ledger.snapshot() == model.snapshot_now(), op
    finally:
        await ledger.delete()
        await client.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(min_value=1, max_value=5_000), ops=_ops)
def test_arithmetic_matches_the_in_process_ledger(
    redis_url: str, run_id: str, budget: int, ops: list[Reserve | Settle | SettleAgain]
) -> None:
    asyncio.run(_compare(redis_url, run_id, budget, ops))


async def test_keys_live_under_the_ledger_prefix(redis_client: Redis, run_id: str) -> None:
    ledger = await RedisLedger.create(redis_client, run_id, 1_000)
    reservation = await ledger.reserve(10)
    assert reservation is not None
    assert await ledger.settle(reservation, 5) == 5
    found = await redis_client.keys(f"{LEDGER_PREFIX}{{{run_id}}}:*")
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in found)
    assert keys == sorted([ledger_totals_key(run_id), ledger_closed_key(run_id)])  # nothing held
    assert ledger_keys(run_id) == [
        ledger_totals_key(run_id),
        ledger_held_key(run_id),
        ledger_closed_key(run_id),
    ]
    assert all(k.startswith("budgetflow:ledger:") for k in ledger_keys(run_id))
    await ledger.delete()
    assert await redis_client.exists(*ledger_keys(run_id)) == 0


async def test_scripts_reload_after_script_flush(redis_client: Redis, run_id: str) -> None:
    ledger = await RedisLedger.create(redis_client, run_id, 1_000)
    first = await ledger.reserve(100)
    assert first is not None
    await redis_client.script_flush()
    second = await ledger.reserve(100)  # EVALSHA answers NOSCRIPT; the script is loaded again
    assert second is not None
    assert await ledger.settle(first, 40) == 40
    assert await ledger.settle(second, 100) == 100
    assert await ledger.snapshot() == LedgerSnapshot(budget_nano=1_000, spent_nano=140, reserved_nano=0)


async def test_overrun_is_charged_up_to_the_budget(redis_client: Redis, run_id: str) -> None:
    ledger = await RedisLedger.create(redis_client, run_id, 1_000)
    big = await ledger.reserve(600)
    small = await ledger.reserve(300)
    assert big is not None and small is not None
    assert await ledger.reserve(101) is None
    assert await ledger.settle(small, 350) == 350  # over its reservation, but it fits
    assert await ledger.settle(big, 900) == 650  # only what is left of the budget
    assert await ledger.snapshot() == LedgerSnapshot(
        budget_nano=1_000, spent_nano=1_000, reserved_nano=0, overrun_nano=250
    )
    assert await ledger.reserve(1) is None
    assert await ledger.reserve(0) is not None


async def test_create_join_and_errors(redis_client: Redis, run_id: str) -> None:
    with pytest.raises(StorageError, match=f"the Redis ledger of run `{run_id}` is gone"):
        await RedisLedger.join(redis_client, run_id, "0123")
    with pytest.raises(StorageError, match="is gone"):
        await RedisLedger(redis_client, run_id).snapshot()
    created = await RedisLedger.create(redis_client, run_id, 500)
    assert created.run_id == run_id and created.epoch is not None and len(created.epoch) == 16
    # `create` never joins: the old "idempotent create" was how a lost ledger got re-armed
    with pytest.raises(ConfigError, match=r"already has a Redis ledger and `create` only makes new ones"):
        await RedisLedger.create(redis_client, run_id, 500)
    with pytest.raises(ConfigError, match="has another epoch than `0123`"):
        await RedisLedger.join(redis_client, run_id, "0123")
    joined = await RedisLedger.join(redis_client, run_id, created.epoch)
    reservation = await created.reserve(200)
    assert reservation is not None
    assert (await joined.snapshot()).reserved_nano == 200
    assert await joined.settle(reservation, 150) == 150  # any client of the epoch may settle
    observer = RedisLedger(redis_client, run_id)  # no epoch: reads only
    assert await observer.snapshot() == LedgerSnapshot(budget_nano=500, spent_nano=150, reserved_nano=0)
    with pytest.raises(ConfigError, match="has no epoch, so it can only read"):
        await observer.reserve(1)
    with pytest.raises(ConfigError, match="to settle, join the ledger"):
        await observer.settle(reservation, 150)
    stranger = RedisLedger(redis_client, run_id, "0123")
    with pytest.raises(StorageError, match=r"no longer the one this client joined \(epoch `0123`\)"):
        await stranger.reserve(1)
    with pytest.raises(StorageError, match="no longer the one"):
        await stranger.delete()
    with pytest.raises(ValueError, match="negative"):
        await created.reserve(-1)
    with pytest.raises(ValueError, match="negative"):
        await created.settle(reservation, -1)
    with pytest.raises(ValueError, match="budget must be between"):
        await RedisLedger.create(redis_client, "other", 0)
    with pytest.raises(ValueError, match="braces"):
        RedisLedger(redis_client, "bad{id}")
    assert await created.reserve(MAX_LEDGER_NANO + 1) is None
    with pytest.raises(ValueError, match="above the Redis ledger's limit"):
        await created.settle(reservation, MAX_LEDGER_NANO + 1)


async def test_request_ids_make_reserve_and_settle_idempotent(redis_client: Redis, run_id: str) -> None:
    ledger = await RedisLedger.create(redis_client, run_id, 1_000)
    first = await ledger.reserve(600, reservation_id="call-1")
    again = await ledger.reserve(600, reservation_id="call-1")  # a retry: the same hold
    assert first == again == Reservation(reservation_id="call-1", amount_nano=600)
    assert (await ledger.snapshot()).reserved_nano == 600
    with pytest.raises(ValueError, match="`call-1` already holds 600 nano-USD, not 700"):
        await ledger.reserve(700, reservation_id="call-1")
    assert await ledger.reserve(500, reservation_id="call-2") is None  # does not fit ...
    assert await ledger.settle(first, 900) == 900  # an overrun that fits
    assert await ledger.reserve(50, reservation_id="call-2") is None  # ... and stays refused
    assert await ledger.settle(first, 900) == 900  # a retry: charged once
    with pytest.raises(
        ValueError, match="already settled for a cost of 900 nano-USD \\(charged 900\\), not 0"
    ):
        await ledger.settle(first, 0)
    with pytest.raises(ValueError, match="`call-1` was already used and closed"):
        await ledger.reserve(10, reservation_id="call-1")
    with pytest.raises(ValueError, match="`call-2` is unknown or settled"):
        await ledger.settle(Reservation(reservation_id="call-2", amount_nano=50), 10)
    # releasing an id before its reserve arrives closes it: the late reserve holds nothing
    await ledger.release("call-3")
    await ledger.release("call-3")
    with pytest.raises(ValueError, match="`call-3` was already used and closed"):
        await ledger.reserve(10, reservation_id="call-3")
    held = await ledger.reserve(100, reservation_id="call-4")
    assert held is not None
    await ledger.release("call-4")
    await ledger.release("call-4")
    assert await ledger.settle(held, 0) == 0  # released = settled at no cost
    assert await ledger.snapshot() == LedgerSnapshot(budget_nano=1_000, spent_nano=900, reserved_nano=0)
    with pytest.raises(ValueError, match="cannot be empty"):
        await ledger.reserve(1, reservation_id="")


async def test_restore_rebuilds_under_a_new_epoch(redis_client: Redis, run_id: str) -> None:
    old = await RedisLedger.create(redis_client, run_id, 1_000)
    held = await old.reserve(300)
    assert held is not None
    with pytest.raises(
        ConfigError, match="still has a Redis ledger; stop its workers and pass `replace=True`"
    ):
        await RedisLedger.restore(redis_client, run_id, budget_nano=1_000, spent_nano=400)
    observer = RedisLedger(redis_client, run_id)
    assert (await observer.snapshot()).reserved_nano == 300
    new = await RedisLedger.restore(redis_client, run_id, budget_nano=1_000, spent_nano=400, replace=True)
    assert new.epoch != old.epoch
    assert await new.snapshot() == LedgerSnapshot(budget_nano=1_000, spent_nano=400, reserved_nano=0)
    assert await observer.snapshot() == await new.snapshot()  # a reader follows the restore
    with pytest.raises(StorageError, match="no longer the one this client joined"):
        await old.settle(held, 100)
    await new.delete()
    over = await RedisLedger.restore(redis_client, run_id, budget_nano=1_000, spent_nano=1_250)
    assert await over.snapshot() == LedgerSnapshot(
        budget_nano=1_000, spent_nano=1_000, reserved_nano=0, overrun_nano=250
    )
    assert await over.reserve(1) is None
    with pytest.raises(ValueError, match="spend must be between"):
        await RedisLedger.restore(redis_client, run_id, budget_nano=1_000, spent_nano=-1)


def test_retry_settings_are_checked() -> None:
    assert LedgerRetry().window_s == 30.0 and LedgerRetry().attempt_timeout_s == 2.0
    with pytest.raises(ConfigError, match="`window_s` must be positive, got 0"):
        LedgerRetry(window_s=0)
    with pytest.raises(ConfigError, match=r"`attempt_timeout_s` \(5\) is longer than `window_s` \(1\)"):
        LedgerRetry(window_s=1, attempt_timeout_s=5)


async def test_cancelled_reserve_and_settle_do_not_leak(redis_client: Redis, run_id: str) -> None:
    ledger = await RedisLedger.create(redis_client, run_id, 10_000)
    charged = 0
    for delay in range(8):
        task = asyncio.create_task(ledger.reserve(1_000))
        for _ in range(delay):
            await asyncio.sleep(0)
        task.cancel()
        try:
            reservation = await task
        except asyncio.CancelledError:
            continue
        assert reservation is not None  # finished before the cancel: settle it, cancelled too
        settling = asyncio.create_task(ledger.settle(reservation, 10))
        for _ in range(delay):
            await asyncio.sleep(0)
        settling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await settling
        charged += 10  # cancelled or not, the settle completed
    assert charged > 0
    assert await ledger.snapshot() == LedgerSnapshot(budget_nano=10_000, spent_nano=charged, reserved_nano=0)


async def test_unreachable_redis_is_a_storage_error(run_id: str, unused_port: int) -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{unused_port}/0", socket_connect_timeout=1)
    quick = LedgerRetry(window_s=0.5, attempt_timeout_s=0.2)
    try:
        with pytest.raises(StorageError, match=r"did not answer `create` within 0.5 s \(\d+ attempts; last"):
            await RedisLedger.create(client, run_id, 100, retry=quick)
        ledger = RedisLedger(client, run_id, "0123", retry=quick)
        with pytest.raises(
            StorageError,
            match=r"`reserve`.*reservation `.+-0` may be held: this ledger releases it with its next",
        ):
            await ledger.reserve(10)
    finally:
        await client.aclose()
