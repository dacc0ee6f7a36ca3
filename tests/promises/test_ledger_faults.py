"""Runs on the shared Redis ledger while Redis fails: a restart with the stack's settings is
ridden out with exact books; a restart that lost the ledger stops the run, which says why."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from budgetflow import arun
from orchestrator import Catalog, Outcome, RunResult
from orchestrator.ledger import usd_to_nano
from orchestrator.memory_recorder import MemoryRecorder
from storage import RedisLedger
from tests.promises.billing_provider import BillingProvider
from tests.promises.conftest import chain_workflow, provider_model, wait_for_requests
from tests.promises.invariants import check_promises
from tests.servers import OwnRedis

pytestmark = [pytest.mark.isolated, pytest.mark.redis]

STACK_CONF = str(Path(__file__).resolve().parents[2] / "deploy" / "redis.conf")
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


async def _run_through_a_restart(
    provider: BillingProvider, server: OwnRedis, recorder: MemoryRecorder, *, down_s: float
) -> RunResult:
    client = Redis.from_url(server.url)
    ledger = await RedisLedger.create(client, "e2e-run", usd_to_nano("1"))

    async def restart() -> None:
        await wait_for_requests(provider, 2)
        await server.restart(down_s)

    fault = asyncio.create_task(restart())
    try:
        result = await arun(
            chain_workflow(6),
            catalog=Catalog.of(provider_model(provider)),
            budget_usd="1",
            deadline_s=60,
            inputs={"topic": "x"},
            policy="always_cheapest",
            ledger=ledger,
            recorder=recorder,
            run_id="e2e-run",
        )
        await fault
    finally:
        await client.aclose()
    return result


async def test_a_redis_restart_with_the_stack_settings_keeps_exact_books(
    provider: BillingProvider, own_redis: Callable[..., OwnRedis]
) -> None:
    provider.configure(first_token_delay_s=0.2)
    server = own_redis(STACK_CONF)
    memory = MemoryRecorder()
    result = await _run_through_a_restart(provider, server, memory, down_s=0.2)
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    client = Redis.from_url(server.url)
    try:
        snap = await RedisLedger(client, "e2e-run").snapshot()
    finally:
        await client.aclose()
    assert snap.reserved_nano == 0
    assert Decimal(snap.spent_nano) / 10**9 == sum(c.cost_usd for c in memory.calls)
    check_promises(
        result.run,
        subtasks=list(memory.subtasks.values()),
        attempts=list(memory.attempts.values()),
        calls=memory.calls,
        provider_log=provider.log(),
    )


async def test_a_redis_that_lost_the_ledger_stops_the_run(
    provider: BillingProvider, own_redis: Callable[..., OwnRedis]
) -> None:
    provider.configure(first_token_delay_s=0.2)
    server = own_redis(*NO_PERSISTENCE)
    memory = MemoryRecorder()
    result = await _run_through_a_restart(provider, server, memory, down_s=0.2)
    run = result.run
    assert run.outcome is Outcome.FAILED
    assert "StorageError" in (run.reason or "") and "e2e-run" in (run.reason or ""), run.reason
    # What the run reports spent is what its settled calls were charged before the loss.
    settled = sum(c.cost_usd for c in memory.calls)
    assert run.spent_usd <= settled
    delivered = {e.response_id for e in provider.log() if e.delivered}
    assert delivered <= {c.response_id for c in memory.calls}, "a paid call went unrecorded"
