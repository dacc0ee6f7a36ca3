"""Nothing lost under storage faults: a PostgreSQL restart is ridden out, a lost database ends the run.

Each test owns its PostgreSQL server (`tests.servers.PostgresProcess`) and stops
it for real in the middle of a run, while the calls go to the billing provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from budgetflow import arun
from orchestrator import Catalog, Outcome
from orchestrator.records import CallKind
from storage import SqlRecorder, get_run
from tests.promises.billing_provider import BillingProvider
from tests.promises.conftest import chain_workflow, provider_model, wait_for_requests
from tests.promises.invariants import check_promises
from tests.servers import PostgresProcess
from tests.storage.conftest import PG_BIN

pytestmark = [
    pytest.mark.isolated,
    pytest.mark.postgres,
    pytest.mark.skipif(not (PG_BIN / "postgres").exists(), reason="PostgreSQL binaries not found"),
]


@pytest.fixture
def own_postgres() -> Iterator[PostgresProcess]:
    server = PostgresProcess()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_a_postgres_restart_mid_run_is_ridden_out(
    provider: BillingProvider, own_postgres: PostgresProcess, tmp_path: Path
) -> None:
    provider.configure(first_token_delay_s=0.2)
    catalog = Catalog.of(provider_model(provider))
    recorder = await SqlRecorder.open(own_postgres.url, spill_path=tmp_path / "spill.jsonl")

    async def restart() -> None:
        await wait_for_requests(provider, 2)
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(own_postgres.start)

    fault = asyncio.create_task(restart())
    try:
        result = await arun(
            chain_workflow(8),
            catalog=catalog,
            budget_usd="1",
            deadline_s=60,
            inputs={"topic": "x"},
            policy="always_cheapest",
            recorder=recorder,
        )
        await fault
    finally:
        await recorder.aclose()
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    assert not (tmp_path / "spill.jsonl").exists()
    detail = get_run(own_postgres.url, result.run_id)
    assert len([c for c in detail.calls if c.kind is CallKind.LLM]) == 8
    check_promises(
        detail.run,
        subtasks=detail.subtasks,
        attempts=detail.attempts,
        calls=detail.calls,
        provider_log=provider.log(),
    )


async def test_a_lost_database_ends_the_run_promptly_and_keeps_its_records(
    provider: BillingProvider, own_postgres: PostgresProcess, tmp_path: Path
) -> None:
    provider.configure(first_token_delay_s=0.2)
    catalog = Catalog.of(provider_model(provider))
    spill = tmp_path / "spill.jsonl"
    recorder = await SqlRecorder.open(own_postgres.url, spill_path=spill)

    async def lose() -> None:
        await wait_for_requests(provider, 2)
        await asyncio.to_thread(own_postgres.stop)

    fault = asyncio.create_task(lose())
    try:
        result = await arun(
            chain_workflow(8),
            catalog=catalog,
            budget_usd="1",
            deadline_s=8,
            inputs={"topic": "x"},
            policy="always_cheapest",
            recorder=recorder,
        )
        returned = (datetime.now(UTC) - result.run.started_at).total_seconds()
        await fault
    finally:
        with pytest.raises(Exception, match="kept in"):
            await recorder.aclose()
    assert result.outcome is Outcome.FAILED
    assert "StorageError" in (result.run.reason or ""), result.run.reason
    assert returned <= 8 + 1.0, returned
    assert spill.exists(), "the records the database did not take are kept"

    # The database comes back: the next recorder writes the kept records first.
    own_postgres.start()
    async with await SqlRecorder.open(own_postgres.url, spill_path=spill):
        pass
    assert not spill.exists()
    detail = get_run(own_postgres.url, result.run_id)
    recorded = {c.response_id for c in detail.calls if c.response_id}
    delivered = {e.response_id for e in provider.log() if e.delivered}
    assert delivered <= recorded, f"paid calls lost: {delivered - recorded}"


async def test_nul_characters_are_recorded_on_postgres(
    provider: BillingProvider, own_postgres: PostgresProcess
) -> None:
    catalog = Catalog.of(provider_model(provider))
    async with await SqlRecorder.open(own_postgres.url) as recorder:
        result = await arun(
            chain_workflow(1),
            catalog=catalog,
            budget_usd="1",
            deadline_s=30,
            inputs={"topic": "a\x00b"},
            policy="always_cheapest",
            recorder=recorder,
        )
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    detail = get_run(own_postgres.url, result.run_id)
    assert detail.run.inputs == {"topic": "a\ufffdb"}
    (call,) = [c for c in detail.calls if c.kind is CallKind.LLM]
    assert call.prompt is not None and "a\ufffdb" in call.prompt
