"""RedisLedger when Redis fails: lost replies, restarts with and without persistence, a stall,
a rollback, and the re-arm the old idempotent `create` allowed.

Each test starts and breaks its own redis-server (its own port and directory, controlled by
PID); lost replies come from a proxy that lets a command through and drops its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.asyncio import BlockingConnectionPool, Redis

from orchestrator.errors import ConfigError, StorageError
from orchestrator.ledger import LedgerSnapshot
from storage import RedisLedger
from storage.redis_keys import ledger_closed_key, ledger_held_key, ledger_keys
from storage.redis_ledger import LedgerRetry
from tests.servers import OwnRedis

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
STACK_CONF = REPO / "deploy" / "redis.conf"
"""The settings the stack ships with (AOF, fsync before every reply, no eviction)."""
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")
LEDGER_CLIENT = "ledger-under-test"
"""Client name of every connection the ledgers under test open (see `drain`)."""


def ledger_client(url: str) -> Redis:
    """A worker's client: a few pooled connections, each named so `drain` can find them."""
    pool = BlockingConnectionPool.from_url(url, max_connections=16, timeout=30, client_name=LEDGER_CLIENT)
    return Redis.from_pool(pool)


async def drain(clients: list[Redis], checker: Redis) -> None:
    """Close the ledgers' clients, then wait until Redis has dropped all their connections.

    Redis runs what a closed connection sent before it notices the close, so
    afterwards no abandoned attempt of a ledger operation is still to come.
    """
    for client in clients:
        await client.aclose()
    deadline = time.monotonic() + 15
    while any(c.get("name") == LEDGER_CLIENT for c in await checker.client_list()):
        assert time.monotonic() < deadline, "Redis kept connections the ledgers closed"
        await asyncio.sleep(0.02)


@dataclass
class Load:
    """Many clients reserving and settling on one ledger, and what they believe happened."""

    milestone_at: int
    """`milestone` is set when this many settles were confirmed."""
    milestone: asyncio.Event = field(default_factory=asyncio.Event)
    charged: int = 0
    """Sum of the charges the ledger confirmed."""
    actual: int = 0
    """Sum of the costs of every call made (each had a hold), settled or not."""
    settled: int = 0
    refused: int = 0
    slowest_s: float = 0.0
    """Longest reserve or settle."""
    errors: list[StorageError] = field(default_factory=list)

    async def client(
        self,
        ledger: RedisLedger,
        seed: int,
        rounds: int,
        *,
        max_amount: int = 20_000,
        until_refused: bool = False,
    ) -> None:
        """Reserve and settle `rounds` times (a fifth of the costs overrun).

        Stops at a StorageError, and at the first refusal if `until_refused`.
        """
        rng = random.Random(seed)
        for _ in range(rounds):
            amount = rng.randint(1, max_amount)
            started = time.monotonic()
            try:
                reservation = await ledger.reserve(amount)
            except StorageError as error:
                self.errors.append(error)
                return
            self._timed(started)
            if reservation is None:
                self.refused += 1
                if until_refused:
                    return
                await asyncio.sleep(0.001)
                continue
            await asyncio.sleep(rng.random() * 0.004)  # the model call
            actual = rng.randint(amount + 1, 2 * amount) if rng.random() < 0.2 else rng.randint(0, amount)
            self.actual += actual
            started = time.monotonic()
            try:
                charged = await ledger.settle(reservation, actual)
            except StorageError as error:
                self.errors.append(error)
                return
            self._timed(started)
            self.charged += charged
            self.settled += 1
            if self.settled == self.milestone_at:
                self.milestone.set()

    def _timed(self, started: float) -> None:
        self.slowest_s = max(self.slowest_s, time.monotonic() - started)


async def watch(ledger: RedisLedger, stop: asyncio.Event) -> int:
    """Check `spent + reserved <= budget` on snapshots until `stop` or a StorageError."""
    seen = 0
    while not stop.is_set():
        try:
            snap = await ledger.snapshot()
        except StorageError:
            return seen
        assert snap.spent_nano + snap.reserved_nano <= snap.budget_nano, snap
        seen += 1
        await asyncio.sleep(0.005)
    return seen


async def closed_outcomes(checker: Redis, run_id: str) -> dict[str, int]:
    """How many reservation ids were settled, refused and released, from the `closed` hash."""
    counts = {"settled": 0, "refused": 0, "released": 0}
    for value in (await checker.hgetall(ledger_closed_key(run_id))).values():
        text = value.decode() if isinstance(value, bytes) else value
        counts[text if text in counts else "settled"] += 1
    return counts


async def test_restart_with_the_stack_settings_loses_nothing(
    own_redis: Callable[..., OwnRedis], run_id: str
) -> None:
    """(b) A 0.2 s crash-restart with AOF `appendfsync always` under load: exact accounting."""
    server = own_redis(str(STACK_CONF))
    budget = 40_000_000
    clients = [ledger_client(server.url) for _ in range(4)]
    checker = Redis.from_url(server.url)
    creator = await RedisLedger.create(clients[0], run_id, budget)
    assert creator.epoch is not None
    ledgers = [creator] + [await RedisLedger.join(c, run_id, creator.epoch) for c in clients[1:]]
    load = Load(milestone_at=400)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(creator, stop))
    work = asyncio.gather(*(load.client(ledgers[i % 4], seed=i, rounds=25) for i in range(160)))
    await load.milestone.wait()
    at_crash = load.settled
    await server.restart(down_s=0.2)
    await work
    stop.set()
    assert await watcher > 0
    after = load.settled - at_crash
    final = await creator.snapshot()
    await drain(clients, checker)
    try:
        assert load.errors == []
        assert after > 0, "the load ended before the restart"
        assert load.slowest_s < 10
        assert final.reserved_nano == 0 and await checker.hlen(ledger_held_key(run_id)) == 0
        assert final.spent_nano == load.charged
        assert final.overrun_nano == load.actual - load.charged
        assert final.spent_nano <= budget
        outcomes = await closed_outcomes(checker, run_id)
        assert outcomes["settled"] == load.settled and outcomes["refused"] == load.refused
        assert await RedisLedger(checker, run_id).snapshot() == final  # nothing came later
    finally:
        await checker.aclose()


async def test_a_seven_second_stall_is_ridden_out(own_redis: Callable[..., OwnRedis], run_id: str) -> None:
    """(c) SIGSTOP for 7 s under load: every operation answers once Redis resumes, exactly once."""
    server = own_redis(str(STACK_CONF))
    budget = 40_000_000
    clients = [ledger_client(server.url) for _ in range(4)]
    checker = Redis.from_url(server.url)
    creator = await RedisLedger.create(clients[0], run_id, budget)
    assert creator.epoch is not None
    ledgers = [creator] + [await RedisLedger.join(c, run_id, creator.epoch) for c in clients[1:]]
    load = Load(milestone_at=300)
    work = asyncio.gather(*(load.client(ledgers[i % 4], seed=i, rounds=20) for i in range(160)))
    await load.milestone.wait()
    server.pause()
    await asyncio.sleep(1.0)  # the stall itself; answers Redis wrote before it still arrive
    stalled_at = load.settled
    await asyncio.sleep(6.0)
    assert load.settled == stalled_at  # nothing was answered meanwhile
    server.resume()
    await work
    await drain(clients, checker)
    try:
        final = await RedisLedger(checker, run_id).snapshot()
        assert load.errors == []
        assert 7.0 <= load.slowest_s < 12
        assert final.reserved_nano == 0 and await checker.hlen(ledger_held_key(run_id)) == 0
        assert final.spent_nano == load.charged  # no settle applied twice, none lost
        assert final.overrun_nano == load.actual - load.charged
        outcomes = await closed_outcomes(checker, run_id)
        assert outcomes["settled"] == load.settled and outcomes["refused"] == load.refused
        assert outcomes["released"] == 0
    finally:
        await checker.aclose()


async def test_restart_without_persistence_fails_closed(
    own_redis: Callable[..., OwnRedis], run_id: str
) -> None:
    """(a) Redis forgets the ledger mid-load: every client stops, nothing re-arms it, and the
    operator's restore from the proven spend keeps the whole run within its budget."""
    server = own_redis(*NO_PERSISTENCE)
    budget = 30_000_000
    clients = [ledger_client(server.url) for _ in range(4)]
    checker = Redis.from_url(server.url)
    creator = await RedisLedger.create(clients[0], run_id, budget)
    epoch = creator.epoch
    assert epoch is not None
    ledgers = [creator] + [await RedisLedger.join(c, run_id, epoch) for c in clients[1:]]
    load = Load(milestone_at=300)
    work = asyncio.gather(*(load.client(ledgers[i % 4], seed=i, rounds=10_000) for i in range(120)))
    await load.milestone.wait()
    await server.restart(down_s=0.2)
    await work
    try:
        assert len(load.errors) == 120  # every client stopped on its first operation after
        assert all("is gone: Redis lost its keys" in str(e) for e in load.errors), load.errors[0]
        assert "This client last saw spent" in str(load.errors[0])
        assert await checker.exists(*ledger_keys(run_id)) == 0  # nothing re-created it
        with pytest.raises(StorageError, match="is gone"):
            await RedisLedger.join(checker, run_id, epoch)
        # The operator restores from the calling tree: every call made, settled or not.
        restored = await RedisLedger.restore(checker, run_id, budget_nano=budget, spent_nano=load.actual)
        assert restored.epoch not in (None, epoch)
        with pytest.raises(StorageError, match="no longer the one this client joined"):
            await ledgers[1].reserve(1)
        rest = Load(milestone_at=0)
        await asyncio.gather(
            *(rest.client(restored, seed=1000 + i, rounds=10_000, until_refused=True) for i in range(40))
        )
        assert rest.errors == [] and rest.refused == 40  # each ran until the budget refused it
        final = await restored.snapshot()
        assert final.reserved_nano == 0
        assert final.spent_nano <= budget
        assert final.spent_nano + final.overrun_nano == load.actual + rest.actual  # every cost counted
    finally:
        for client in clients:
            await client.aclose()
        await checker.aclose()


async def test_the_reported_rearm_is_refused(own_redis: Callable[..., OwnRedis], run_id: str) -> None:
    """(d) The report: a 100M budget spent, Redis restarted without persistence, then the
    workers "joined" again with `create` and charged 121.2M. Now they cannot spend a nano more."""
    server = own_redis(*NO_PERSISTENCE)
    budget = 100_000_000
    client = ledger_client(server.url)
    creator = await RedisLedger.create(client, run_id, budget)
    epoch = creator.epoch
    assert epoch is not None
    workers = [await RedisLedger.join(client, run_id, epoch) for _ in range(8)]
    with pytest.raises(ConfigError, match="`create` only makes new ones"):
        await RedisLedger.create(client, run_id, budget)  # the old way to join
    spent = Load(milestone_at=0)
    await asyncio.gather(
        *(
            spent.client(w, seed=i, rounds=10_000, max_amount=2_000_000, until_refused=True)
            for i, w in enumerate(workers)
        )
    )
    assert spent.errors == [] and spent.refused == 8 and spent.charged <= budget
    await server.restart(down_s=0.2)
    try:
        for worker in workers:
            with pytest.raises(StorageError, match="is gone"):
                await worker.reserve(1)
            with pytest.raises(StorageError, match="is gone"):
                await RedisLedger.join(client, run_id, epoch)
        # Someone creates the run's ledger anew: no worker of the run accepts it.
        stray = await RedisLedger.create(client, run_id, budget)
        for worker in workers:
            with pytest.raises(StorageError, match="no longer the one this client joined"):
                await worker.reserve(1)
        with pytest.raises(ConfigError, match="has another epoch"):
            await RedisLedger.join(client, run_id, epoch)
        assert stray.epoch != epoch
    finally:
        await client.aclose()


async def test_a_rollback_is_detected_and_sticks(own_redis: Callable[..., OwnRedis], run_id: str) -> None:
    """Redis back from an older snapshot: the ledger refuses all work, for every client."""
    server = own_redis(*NO_PERSISTENCE)
    client = ledger_client(server.url)
    ledger = await RedisLedger.create(client, run_id, 1_000)  # write #1
    held = await ledger.reserve(100)  # 2
    assert held is not None
    await client.save()
    shutil.copy(server.root / "dump.rdb", server.root / "older.rdb")
    assert await ledger.settle(held, 80) == 80  # 3
    assert await ledger.reserve(500) is not None  # 4
    await server.crash()
    shutil.copy(server.root / "older.rdb", server.root / "dump.rdb")
    await server.start()
    try:
        with pytest.raises(
            StorageError, match=r"rolled back \(write #2 is its newest but a client saw write #4\)"
        ):
            await ledger.snapshot()
        fresh = await RedisLedger.create(client, "other-run", 10)  # unrelated runs are unaffected
        assert await fresh.reserve(5) is not None
        newcomer = RedisLedger(client, run_id, ledger.epoch)  # has seen nothing, still refused
        with pytest.raises(StorageError, match=r"rolled back.*`await RedisLedger.restore"):
            await newcomer.reserve(1)
        restored = await RedisLedger.restore(client, run_id, budget_nano=1_000, spent_nano=580, replace=True)
        assert await restored.snapshot() == LedgerSnapshot(budget_nano=1_000, spent_nano=580, reserved_nano=0)
    finally:
        await client.aclose()


class LossyProxy:
    """A TCP proxy to Redis that loses the answers to scripts: Redis runs them, the client hears nothing.

    `drop` loses that many next answers; `loss` loses each answer with that
    probability (seeded). A lost answer closes the client's connection, as a
    network failure or a Redis restart would.
    """

    def __init__(self, upstream_port: int, *, seed: int = 0, loss: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.drop = 0
        self.loss = loss
        self.scripts = 0
        """Scripts sent on to Redis."""
        self.lost = 0
        """Answers lost."""
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        """Listen on a free loopback port; return the URL to connect to."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def aclose(self) -> None:
        """Stop listening and cut every connection."""
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        doomed = asyncio.Event()
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

            async def to_redis() -> None:
                assert up_writer is not None
                while data := await reader.read(65536):
                    if b"EVALSHA" in data:
                        self.scripts += 1
                        if self.drop > 0 or self._rng.random() < self.loss:
                            self.drop = max(0, self.drop - 1)
                            doomed.set()
                    up_writer.write(data)
                    await up_writer.drain()

            async def to_client() -> None:
                while data := await up_reader.read(65536):
                    if doomed.is_set():  # this is the script's answer: lose it and hang up
                        self.lost += 1
                        return
                    writer.write(data)
                    await writer.drain()

            pumps = [asyncio.create_task(to_redis()), asyncio.create_task(to_client())]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            streams = [w for w in (writer, up_writer) if w is not None]
            for stream in streams:
                stream.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.gather(*(stream.wait_closed() for stream in streams))
            self._tasks.discard(task)


async def test_lost_answers_are_answered_once(redis_url: str, run_id: str) -> None:
    proxy = LossyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    client = ledger_client(await proxy.start())
    direct = Redis.from_url(redis_url)
    try:
        proxy.drop = 2
        ledger = await RedisLedger.create(client, run_id, 1_000)  # answered on the third try, created once
        assert proxy.lost == 2
        proxy.drop = 3
        held = await ledger.reserve(600)
        assert held is not None and proxy.lost == 5
        assert await ledger.snapshot() == LedgerSnapshot(budget_nano=1_000, spent_nano=0, reserved_nano=600)
        proxy.drop = 3
        assert await ledger.reserve(500) is None  # refused 4 times over, held never
        proxy.drop = 3
        assert await ledger.settle(held, 700) == 700  # charged once
        other = await ledger.reserve(300)
        assert other is not None
        proxy.drop = 2
        await ledger.release(other.reservation_id)
        assert proxy.lost == 13
        assert await ledger.snapshot() == LedgerSnapshot(budget_nano=1_000, spent_nano=700, reserved_nano=0)
        assert await direct.hlen(ledger_held_key(run_id)) == 0
    finally:
        await client.aclose()
        await direct.aclose()
        await proxy.aclose()


async def test_a_lossy_network_under_load_keeps_exact_accounting(redis_url: str, run_id: str) -> None:
    proxy = LossyProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]), seed=7, loss=0.1)
    url = await proxy.start()
    clients = [ledger_client(url) for _ in range(2)]
    checker = Redis.from_url(redis_url)
    try:
        creator = await RedisLedger.create(clients[0], run_id, 3_000_000)
        assert creator.epoch is not None
        ledgers = [creator, await RedisLedger.join(clients[1], run_id, creator.epoch)]
        load = Load(milestone_at=0)
        await asyncio.gather(*(load.client(ledgers[i % 2], seed=i, rounds=8) for i in range(100)))
        await drain(clients, checker)
        final = await RedisLedger(checker, run_id).snapshot()
        assert load.errors == [] and load.refused > 0
        assert proxy.lost > 50
        assert final.reserved_nano == 0
        assert final.spent_nano == load.charged
        assert final.overrun_nano == load.actual - load.charged
    finally:
        await checker.aclose()
        await proxy.aclose()


async def test_operations_given_up_in_a_stall_are_finished_later(
    own_redis: Callable[..., OwnRedis], run_id: str
) -> None:
    """Past the retry window a reserve and a settle fail, then complete once Redis answers."""
    server = own_redis(*NO_PERSISTENCE)
    client = ledger_client(server.url)
    checker = Redis.from_url(server.url)
    quick = LedgerRetry(window_s=1.0, attempt_timeout_s=0.3)
    ledger = await RedisLedger.create(client, run_id, 1_000, retry=quick)
    held = await ledger.reserve(200)
    assert held is not None
    server.pause()
    try:
        with pytest.raises(
            StorageError, match="may be held: this ledger releases it with its next operation"
        ):
            await ledger.reserve(100)  # sent before the stall began? Redis runs it on resuming
        with pytest.raises(StorageError, match="for 150 nano-USD may not have happened: this ledger settles"):
            await ledger.settle(held, 150)
    finally:
        server.resume()
    await ledger.snapshot()  # Redis answers: the doubtful release and settle are sent
    await drain([client], checker)
    try:
        final = await RedisLedger(checker, run_id).snapshot()
        assert final == LedgerSnapshot(budget_nano=1_000, spent_nano=150, reserved_nano=0)
        assert await checker.hlen(ledger_held_key(run_id)) == 0
    finally:
        await checker.aclose()


def test_the_stack_ships_durable_redis_settings(own_redis: Callable[..., OwnRedis]) -> None:
    """deploy/redis.conf starts as is and sets what docs/ledger.md promises; compose uses it."""
    server = own_redis(str(STACK_CONF))
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=True)
    try:
        settings = {
            k: client.config_get(k)[k] for k in ("appendonly", "appendfsync", "save", "maxmemory-policy")
        }
    finally:
        client.close()
    assert settings == {
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
        "maxmemory-policy": "noeviction",
    }
    service = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["redis"]
    assert service["command"] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    assert "./deploy/redis.conf:/usr/local/etc/redis/redis.conf:ro" in service["volumes"]
    assert "redisdata:/data" in service["volumes"]
