"""Events of a run executed in another process reach the API through Redis (`web.api.relay`):
followed live over server-sent events, resumed after a relayed id, and the dashboard follows
such a run live. The run here goes in the test's process, as a worker would run it, with a real
redis-server and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import httpx
from redis.asyncio import Redis

from budgetflow.services import default_client, resolve_policy
from budgetflow.settings import Settings
from orchestrator import arun
from storage import SqlRecorder
from tests.api import quick_workflow
from tests.api.conftest import real_server
from tests.servers import OwnRedis
from web.api import AllowAll, WorkflowRegistry, create_app
from web.api.relay import RelayObserver, follow_relay, is_relay_id


async def _events(base: str, run_id: str, headers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(id, event) of every message of the run's stream until the server ends it."""
    got: list[tuple[str, str]] = []
    current: dict[str, str] = {}
    async with (
        httpx.AsyncClient(base_url=base, timeout=60) as client,
        client.stream("GET", f"/runs/{run_id}/events", headers=headers or {}) as answer,
    ):
        assert answer.status_code == 200
        async for line in answer.aiter_lines():
            if not line:
                if "event" in current:
                    got.append((current.get("id", ""), current["event"]))
                current = {}
                continue
            key, _, value = line.partition(": ")
            current[key] = value
    return got


async def test_a_run_elsewhere_is_followed_through_redis(
    settings: Settings, own_redis: Callable[..., OwnRedis], tmp_path: Path
) -> None:
    server = own_redis()
    relay = Redis.from_url(server.url)
    app = create_app(
        dataclasses.replace(settings, redis_url=server.url),
        authorizer=AllowAll(),
        workflows=WorkflowRegistry.from_modules(settings.api_workflows, settings),
        follow_relayed=True,  # as `serve --workers` with Redis does
    )
    run_id = "relayed-run-1"
    try:
        with real_server(app) as base:
            recorder = await SqlRecorder.open(settings.database_url)
            client = default_client(
                quick_workflow.workflow, quick_workflow.catalog, seed=1, sim_time_scale=0.01
            )
            started = asyncio.Event()

            class Started:
                event_types = None

                async def observe(self, event: object) -> None:
                    started.set()

            run = asyncio.create_task(
                arun(
                    quick_workflow.workflow,
                    catalog=quick_workflow.catalog,
                    client=client,
                    policy=resolve_policy("mcpp", 1),
                    budget_usd="0.05",
                    inputs=quick_workflow.inputs,
                    recorder=recorder,
                    observers=[RelayObserver(relay, run_id), Started()],
                    run_id=run_id,
                    seed=1,
                    observer_drain_s=5.0,  # as a worker lets its relay finish
                )
            )
            await started.wait()
            for _ in range(2000):  # the relay's own queue delivers soon after
                if await relay.exists(f"budgetflow:events:{{{run_id}}}"):
                    break
                await asyncio.sleep(0.005)
            followed = asyncio.create_task(_events(base, run_id))
            page = await asyncio.to_thread(httpx.get, f"{base}/ui/runs/{run_id}", timeout=30)
            result = await run
            await recorder.aclose()
            events = await asyncio.wait_for(followed, 60)
            # Resuming after the third relayed event gives exactly the rest.
            rest = await _events(base, run_id, {"Last-Event-ID": events[2][0]})
    finally:
        await relay.aclose()
    kinds = [kind for _, kind in events]
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    assert all(is_relay_id(event_id) for event_id, _ in events)
    assert kinds.count("CallFinished") == len(result.calls)  # model calls and agent spans
    assert rest == events[3:]
    assert 'data-live="1"' in page.text  # the dashboard follows it although it runs elsewhere


async def test_follow_relay_ends_with_the_run_and_reads_what_was_kept(
    own_redis: Callable[..., OwnRedis],
) -> None:
    server = own_redis()
    client = Redis.from_url(server.url)
    try:
        for n, kind in enumerate(["RunStarted", "CallFinished", "RunFinished"]):
            await client.xadd("budgetflow:events:{r}", {"type": kind, "data": json.dumps({"n": n})})
        read = [e async for e in follow_relay(client, "r", idle_s=0.05) if e is not None]
        assert [e.type for e in read] == ["RunStarted", "CallFinished", "RunFinished"]
        after_first = [e async for e in follow_relay(client, "r", after=read[0].id) if e is not None]
        assert [e.type for e in after_first] == ["CallFinished", "RunFinished"]
        quiet = aiter(follow_relay(client, "nothing", idle_s=0.05))
        assert await anext(quiet) is None  # a keep-alive while nothing comes
    finally:
        await client.aclose()
