"""`budgetflow run` on the shared services: the Redis ledger and PostgreSQL, started for real."""

from __future__ import annotations

import asyncio
import io
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from rich.console import Console

from budgetflow import main
from orchestrator.ledger import nano_to_usd
from storage import RedisLedger, get_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.postgres
@pytest.mark.redis
async def test_run_with_redis_ledger_and_postgres(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, postgres_url: str
) -> None:
    monkeypatch.setenv("BUDGETFLOW_REDIS_URL", redis_url)
    buf = io.StringIO()
    console = Console(file=buf, width=160, color_system=None)
    argv = [
        "--db",
        postgres_url,
        "run",
        str(EXAMPLES / "research_qa.py"),
        "--policy",
        "always_cheapest",
        "--time-scale",
        "0.01",
        "--no-progress",
    ]
    # main() runs its own event loop: call it from a worker thread of this test's loop
    code = await asyncio.to_thread(main, argv, console=console)
    text = buf.getvalue()
    assert code == 0, text
    assert "ledger: Redis" in text
    run_id = text.split("runs show ")[-1].split()[0]
    detail = get_run(postgres_url, run_id)
    client = Redis.from_url(redis_url)
    try:
        snap = await RedisLedger(client, run_id).snapshot()
    finally:
        await client.aclose()
    assert snap.reserved_nano == 0
    assert nano_to_usd(snap.spent_nano) == detail.run.spent_usd > Decimal(0)
    assert snap.budget_nano == 30_000_000  # the file's budget_usd = 0.03
