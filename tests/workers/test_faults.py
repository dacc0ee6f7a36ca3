"""The fault suite: real `budgetflow worker` processes on PostgreSQL and Redis (deploy/redis.conf: AOF,
fsync always), loaded with simulated-backend runs while workers are SIGKILLed, paused and cut off
and while Redis and PostgreSQL restart. After each, `tests.workers.cluster.check_load`: every run
ended, no call record lost, nothing paid twice (records = Redis ledger), no run executed by two
workers at once.

The load's size: `FAULTS_RUNS` runs (default 100) and `FAULTS_KILLS` kills (default 10); the
issue's full size is

    FAULTS_RUNS=1000 FAULTS_KILLS=100 .venv/bin/pytest -m workers -q tests/workers/test_faults.py -k kills -s
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from orchestrator.ledger import nano_to_usd, usd_to_nano
from storage.shared_budgets import create_budget
from tests.servers import REDIS_SERVER, OwnRedis, PostgresProcess
from tests.workers.cluster import FINAL, Cluster, check_load, wait_until
from tests.workers.proxy import TcpProxy

pytestmark = pytest.mark.workers

ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("FAULTS_RUNS", "100"))
KILLS = int(os.environ.get("FAULTS_KILLS", "10"))
SEED = 13


@pytest.fixture
def postgres() -> Iterator[PostgresProcess]:
    """A PostgreSQL server of this test's own (it may be restarted)."""
    server = PostgresProcess()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def ledger_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server with the stack's settings (AOF, `appendfsync always`): a restart keeps the ledgers."""
    if not REDIS_SERVER.exists():
        pytest.skip(f"redis-server not found at `{REDIS_SERVER}`")
    root = tmp_path / "redis"
    root.mkdir()
    server = OwnRedis(root, str(ROOT / "deploy" / "redis.conf"))
    server.start_now()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresProcess, ledger_redis: OwnRedis) -> Iterator[Cluster]:
    """Workers on `postgres` and `ledger_redis`; every one stopped at the end."""
    work = tmp_path / "workers"
    work.mkdir()
    cluster = Cluster(root=work, database_url=postgres.url, redis_url=ledger_redis.url)
    cluster.prepare()
    try:
        yield cluster
    finally:
        cluster.close()


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


TEAM_SHARE = Decimal("0.7")
"""The load's team budget, as a share of what its runs spend without one: it binds before the end."""
RUN_SPEND_USD = Decimal("0.00027")
"""What one load run spends, about (measured: 1,000 runs spent $0.2685)."""


class BudgetSampler:
    """Reads a shared budget's counters in Redis every `every_s` on a thread until stopped."""

    def __init__(self, url: str, key: str, every_s: float = 0.05) -> None:
        self.samples: list[tuple[int, int, int]] = []
        """(spent, reserved, limit) as read, nano-USD."""
        self._client = redis.Redis.from_url(url)
        self._key, self._every_s = key, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="budget sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._every_s):
            spent, reserved, limit = self._client.hmget(self._key, ["spent", "reserved", "limit"])
            if limit is not None:
                self.samples.append((int(spent or 0), int(reserved or 0), int(limit)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()


@pytest.mark.timeout(max(240, RUNS))
def test_load_with_kills(cluster: Cluster, postgres: PostgresProcess, ledger_redis: OwnRedis) -> None:
    """`RUNS` runs across 4 workers under one team budget; a random worker SIGKILLed `KILLS` times and
    replaced by a new one. The team budget is never exceeded, at any sample, and ends equal to the sum
    of its runs' recorded calls (a killed worker's runs brought it to their records when resumed)."""
    rng = random.Random(SEED)
    limit = (RUN_SPEND_USD * RUNS * TEAM_SHARE).quantize(Decimal("0.000001"))
    team = create_budget(postgres.url, name="load-team", scope="team:load", limit_usd=limit)
    cluster.team = "load"
    cluster.wait_beating([cluster.start_worker() for _ in range(4)])
    run_ids = _ids("load", RUNS)
    sampler = BudgetSampler(ledger_redis.url, team.key(datetime.now(UTC)))
    try:
        started = time.monotonic()
        cluster.enqueue(run_ids, seed=SEED)
        interrupted = 0
        kills = 0
        while kills < KILLS:
            time.sleep(rng.uniform(0.3, 1.5))
            states = cluster.statuses(run_ids)
            if all(status in FINAL for status, _ in states.values()):
                break  # the load ended before every kill
            # A worker in the middle of runs (a replacement loads the planner before it takes any).
            busy = sorted({e for status, e in states.values() if status == "PENDING" and e in cluster.live()})
            if not busy:
                continue
            victim = rng.choice(busy)
            interrupted += sum(e == victim and status == "PENDING" for status, e in states.values())
            cluster.kill(victim)
            kills += 1
            cluster.start_worker()
        cluster.wait_final(run_ids, timeout_s=120 + RUNS / 2)
        elapsed = time.monotonic() - started
    finally:
        sampler.stop()
    report = check_load(postgres.url, ledger_redis.url, run_ids, cluster.root)
    over = [s for s in sampler.samples if s[0] + s[1] > s[2]]
    with redis.Redis.from_url(ledger_redis.url) as client:
        spent, reserved, overrun = (
            int(v or 0) for v in client.hmget(team.key(datetime.now(UTC)), ["spent", "reserved", "overrun"])
        )
    recorded = sum(usd_to_nano(c.cost_usd) for d in report.details.values() for c in d.calls)
    print(
        f"\n{kills} kills ({interrupted} runs interrupted) in {elapsed:.0f} s: {report.summary()};"
        f" team budget ${limit}: spent ${nano_to_usd(spent)} + overrun ${nano_to_usd(overrun)},"
        f" {len(sampler.samples)} samples, none over"
    )
    assert over == [], f"the team budget was exceeded at {len(over)} samples, e.g. {over[:3]}"
    assert len(sampler.samples) > 20
    assert (spent + overrun, reserved) == (recorded, 0), "the team budget disagrees with the records"
    assert spent <= team.limit_nano
    assert set(report.outcomes) <= {"completed", "budget_exhausted"}, report.outcomes
    assert report.outcomes.get("budget_exhausted", 0) > 0  # the team budget bound before the end
    assert report.outcomes.get("completed", 0) > RUNS // 2
    assert kills == KILLS and interrupted > 0  # every kill stopped a worker in the middle of runs
    assert report.replies > 0 and report.resumed > 0


async def _restart_redis(server: OwnRedis, down_s: float) -> None:
    await server.restart(down_s)


@pytest.mark.timeout(240)
def test_redis_restart_mid_load(cluster: Cluster, postgres: PostgresProcess, ledger_redis: OwnRedis) -> None:
    """Redis SIGKILLed mid-load and started again 2 s later on the same AOF: the ledgers are kept, the
    runs' ledger operations retry through the outage and every run completes, paid once."""
    import asyncio

    cluster.wait_beating([cluster.start_worker() for _ in range(4)])
    run_ids = _ids("redis", 40)
    cluster.enqueue(run_ids, seed=SEED)
    wait_until("some runs to make calls", lambda: len(cluster.replies()) >= 20, 60)
    asyncio.run(_restart_redis(ledger_redis, down_s=2.0))
    cluster.wait_final(run_ids, timeout_s=180)
    report = check_load(postgres.url, ledger_redis.url, run_ids, cluster.root)
    print(f"\nRedis restarted: {report.summary()}")
    assert report.outcomes == {"completed": len(run_ids)}


@pytest.mark.timeout(240)
def test_postgres_restart_mid_load(
    cluster: Cluster, postgres: PostgresProcess, ledger_redis: OwnRedis
) -> None:
    """PostgreSQL stopped (`immediate`: connections drop) mid-load and started again 2 s later: workers
    keep their heartbeats apart (nobody is taken over for the outage), and every run ends, each with
    its spend equal to its recorded calls and its Redis ledger."""
    cluster.wait_beating([cluster.start_worker() for _ in range(4)])
    run_ids = _ids("pg", 40)
    cluster.enqueue(run_ids, seed=SEED)
    wait_until("some runs to make calls", lambda: len(cluster.replies()) >= 20, 60)
    postgres.stop()
    time.sleep(2.0)
    postgres.start()
    cluster.wait_final(run_ids, timeout_s=180)
    report = check_load(postgres.url, ledger_redis.url, run_ids, cluster.root)
    print(f"\nPostgreSQL restarted: {report.summary()}; {cluster.resumes()} resumes")
    assert report.outcomes == {"completed": len(run_ids)}
    assert all(p.poll() is None for p in cluster.workers.values())  # no worker died of it


@pytest.mark.timeout(180)
def test_paused_worker_loses_its_runs_and_spends_nothing_when_resumed(
    cluster: Cluster, postgres: PostgresProcess, ledger_redis: OwnRedis
) -> None:
    """SIGSTOP a worker in the middle of its runs: the other takes them over and completes them; the
    paused one, SIGCONT'd, starts no call for them and records and spends nothing more for them."""
    paused, other = cluster.start_worker(), cluster.start_worker()
    cluster.wait_beating([paused, other])
    run_ids = _ids("pause", 12)
    cluster.enqueue(run_ids, seed=SEED)
    wait_until(
        "the worker to be in the middle of runs", lambda: bool(cluster.holding(paused, run_ids)), 60, 0.05
    )
    process = cluster.workers[paused]
    process.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        cluster.wait_final(run_ids, timeout_s=120)
    finally:
        process.send_signal(signal.SIGCONT)
    wait_until(
        "the resumed worker to see it lost its runs",
        lambda: "another worker took it over" in cluster.log(paused),
        30,
    )
    time.sleep(2.0)  # let it do whatever it would do
    report = check_load(
        postgres.url, ledger_redis.url, run_ids, cluster.root, paused={process.pid: stopped_at}
    )
    print(f"\npaused worker: {report.summary()}")
    assert process.poll() is None and report.outcomes == {"completed": len(run_ids)}
    assert report.resumed > 0


@pytest.mark.timeout(180)
def test_partitioned_worker_loses_its_runs_and_spends_nothing_when_healed(
    cluster: Cluster, postgres: PostgresProcess, ledger_redis: OwnRedis
) -> None:
    """A worker whose PostgreSQL and Redis connections go through proxies that are cut (connections
    reset, new ones refused): the other worker takes its runs over; when the network heals, the cut
    worker records and spends nothing more for them, and lives on."""
    db_proxy, redis_proxy = TcpProxy(postgres.port), TcpProxy(ledger_redis.port)
    try:
        cut = cluster.start_worker(
            database_url=f"postgresql+psycopg://postgres@127.0.0.1:{db_proxy.port}/postgres",
            redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0",
        )
        other = cluster.start_worker()
        cluster.wait_beating([cut, other])
        run_ids = _ids("cut", 12)
        cluster.enqueue(run_ids, seed=SEED)
        wait_until(
            "the worker to be in the middle of runs", lambda: bool(cluster.holding(cut, run_ids)), 60, 0.05
        )
        cut_at = time.time()
        db_proxy.cut()
        redis_proxy.cut()
        try:
            cluster.wait_final(run_ids, timeout_s=120)
        finally:
            db_proxy.heal()
            redis_proxy.heal()
        wait_until("the healed worker to beat again", lambda: cluster.beats()[cut] > time.time() - 5, 60)
        time.sleep(2.0)
        process = cluster.workers[cut]
        report = check_load(
            postgres.url, ledger_redis.url, run_ids, cluster.root, paused={process.pid: cut_at}
        )
        print(f"\npartitioned worker: {report.summary()}")
        assert process.poll() is None and report.outcomes == {"completed": len(run_ids)}
        assert report.resumed > 0
    finally:
        db_proxy.close()
        redis_proxy.close()
