"""Many processes, many runs, one shared budget: never exceeded at any sample, spend exactly counted.

Four worker processes each run three run ledgers under one team budget, with forty
concurrent callers per run reserving random amounts and settling random costs (a fifth of
them above their hold). The test samples the budget's spent + reserved in Redis as fast as
it can meanwhile. The shared budget is the binding limit (the runs' budgets add up to more),
so reservations are refused all along.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from storage.redis_keys import ledger_totals_key
from tests.budgets.support import budget

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 4
RUNS_PER_PROCESS = 3
CALLERS_PER_RUN = 40
ROUNDS = 5
LIMIT = 2_000_000
RUN_BUDGET = 400_000

_WORKER = """
import asyncio, json, random, sys
from redis.asyncio import BlockingConnectionPool, Redis
from storage.shared_budgets import BudgetScope, SharedBudget
from storage.shared_ledger import SharedBudgetLedger

async def caller(ledger, seed, rounds, tally):
    rng = random.Random(seed)
    for _ in range(rounds):
        amount = rng.randint(1, 20_000)
        held = await ledger.reserve(amount)
        tally["reserves"] += 1
        if held is None:
            tally["refused"] += 1
            continue
        await asyncio.sleep(rng.random() * 0.002)
        actual = rng.randint(amount + 1, 3 * amount) if rng.random() < 0.2 else rng.randint(0, amount)
        charged = await ledger.settle(held, actual)
        tally["charged"] += charged
        tally["actual"] += actual

async def main():
    url, prefix, budget_id, limit, run_budget, base = sys.argv[1:7]
    scope = BudgetScope.parse("team:t")
    team = SharedBudget(budget_id=budget_id, name="team", scope=scope, limit_nano=int(limit))
    client = Redis.from_pool(BlockingConnectionPool.from_url(url, max_connections=16, timeout=30))
    runs = {}
    for r in range(RUNS):
        run_id = f"{prefix}-{base}-{r}"
        ledger = await SharedBudgetLedger.create(client, run_id, int(run_budget), budgets=[team])
        runs[run_id] = (ledger, {"reserves": 0, "refused": 0, "charged": 0, "actual": 0})
    await asyncio.gather(*(
        caller(ledger, seed=int(base) * 10_000 + r * 100 + c, rounds=ROUNDS, tally=tally)
        for r, (ledger, tally) in enumerate(runs.values()) for c in range(CALLERS)
    ))
    await client.aclose()
    print(json.dumps({run_id: tally for run_id, (_, tally) in runs.items()}))

asyncio.run(main())
"""


async def test_processes_hammering_one_shared_budget_never_exceed_it(
    redis_client: Redis, redis_url: str, run_id: str
) -> None:
    team = budget("team", LIMIT)
    key = team.key(datetime.now(UTC))  # no window: one counter forever
    code = (
        _WORKER.replace("RUNS", str(RUNS_PER_PROCESS))
        .replace("CALLERS", str(CALLERS_PER_RUN))
        .replace("ROUNDS", str(ROUNDS))
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            redis_url,
            run_id,
            team.budget_id,
            str(LIMIT),
            str(RUN_BUDGET),
            str(i),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    samples, highest = 0, 0
    outputs = asyncio.gather(*(w.communicate() for w in workers))
    deadline = time.monotonic() + 90
    while not outputs.done():
        assert time.monotonic() < deadline, "the workers did not finish in 90 s"
        sample = await redis_client.hmget(key, "spent", "reserved")
        total = sum(int(v or 0) for v in sample)
        assert total <= LIMIT, f"sample {samples}: spent + reserved = {total} > {LIMIT}"
        highest = max(highest, total)
        samples += 1
    results = await outputs
    for worker, (_, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err.decode()
    tallies: dict[str, dict[str, int]] = {}
    for out, _ in results:
        tallies.update(json.loads(out))
    assert len(tallies) == PROCESSES * RUNS_PER_PROCESS

    spent, reserved, overrun = (
        int(v or 0) for v in await redis_client.hmget(key, "spent", "reserved", "overrun")
    )
    actual = sum(t["actual"] for t in tallies.values())
    reserves = sum(t["reserves"] for t in tallies.values())
    refused = sum(t["refused"] for t in tallies.values())
    assert reserved == 0
    assert spent <= LIMIT
    # Every settled cost is in the budget exactly once: charged, or (above a hold, past the
    # limit) counted as overrun.
    assert spent + overrun == actual
    for run, tally in tallies.items():
        totals = await redis_client.hmget(ledger_totals_key(run), "spent", "reserved", "overrun")
        run_spent, run_reserved, run_overrun = (int(v or 0) for v in totals)
        assert (run_spent, run_reserved) == (tally["charged"], 0), run
        assert run_spent + run_overrun == tally["actual"], run
        assert run_spent + run_reserved <= RUN_BUDGET
    assert refused > 0 and reserves - refused > 0  # the shared budget was contended
    assert samples > 100 and highest > 0.9 * LIMIT
    print(
        f"\n{PROCESSES} processes, {len(tallies)} runs, {reserves} reservations ({refused} refused),"
        f" {samples} samples: max spent+reserved {highest} of {LIMIT}; final spent {spent},"
        f" overrun {overrun}"
    )
