"""Runs through a real server: submit, poll to the end, the detail equals the database; events; cancel."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx

from budgetflow.settings import Settings
from orchestrator.records import CallKind
from storage import get_run
from tests.api.conftest import make_app, real_server
from tests.api.sse import read_messages

TERMINAL = {"completed", "budget_exhausted", "deadline_exceeded", "failed", "cancelled"}


async def _submit(client: httpx.AsyncClient, **body: Any) -> str:
    answer = await client.post("/runs", json={"workflow": "quick", **body})
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/runs/{answer.json()['run_id']}"
    run_id: str = answer.json()["run_id"]
    return run_id


async def _until_ended(client: httpx.AsyncClient, run_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        detail: dict[str, Any] = (await client.get(f"/runs/{run_id}")).json()
        if detail["run"]["outcome"] in TERMINAL and not detail["live"]:
            return detail
        assert time.monotonic() < deadline, f"run {run_id} did not end: {detail['run']}"
        await asyncio.sleep(0.05)


async def test_a_submitted_run_ends_and_its_detail_equals_the_database(
    served: str, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        run_id = await _submit(client, budget_usd="0.04", seed=3)
        detail = await _until_ended(client, run_id)
        listed = (await client.get("/runs")).json()
        metrics = (await client.get("/metrics")).text
    recorded = get_run(settings.database_url, run_id)
    run = detail["run"]
    assert run["outcome"] == recorded.run.outcome.value == "completed"
    assert Decimal(run["spent_usd"]) == recorded.run.spent_usd > 0
    assert Decimal(run["budget_usd"]) == Decimal("0.04") and run["seed"] == 3 and run["simulated"] is True
    assert run["inputs"] == {"topic": "parsing CSV"}
    assert detail["calls"] == sum(1 for c in recorded.calls if c.kind is CallKind.LLM) > 0
    assert [s["subtask"] for s in detail["subtasks"]] == [s.subtask for s in recorded.subtasks]
    assert len(detail["decisions"]) == len(recorded.decisions) > 0
    tree = detail["tree"]
    assert Decimal(tree["cost_usd"]) == sum((c.cost_usd for c in recorded.calls), Decimal(0))
    assert {s["subtask"] for s in tree["subtasks"]} == {"plan", "draft", "review"}
    for node in tree["subtasks"]:
        assert Decimal(node["cost_usd"]) == sum(Decimal(a["cost_usd"]) for a in node["attempts"])
        for attempt in node["attempts"]:
            assert Decimal(attempt["cost_usd"]) == sum(Decimal(c["total_cost_usd"]) for c in attempt["calls"])
            for call in attempt["calls"]:
                own = Decimal(call["cost_usd"])
                assert Decimal(call["total_cost_usd"]) == own + sum(
                    Decimal(c["total_cost_usd"]) for c in call["children"]
                )
    assert [r["run_id"] for r in listed["runs"]] == [run_id] and listed["runs"][0]["calls"] == detail["calls"]
    # The app's own metrics saw the run it executed.
    assert 'budgetflow_runs_total{outcome="completed",policy="mcpp",workflow="quick"} 1.0' in metrics


async def test_a_run_submitted_to_explore_plans_on_drawn_priors_and_its_record_says_so(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        explored = await _submit(client, explore=True, seed=7)
        plain = await _submit(client, seed=7)
        for run_id in (explored, plain):
            async with client.stream("GET", f"/runs/{run_id}/events") as response:
                events = await read_messages(response)
            assert events[-1].event == "RunFinished", [m.event for m in events]
        runs = {run_id: (await client.get(f"/runs/{run_id}")).json()["run"] for run_id in (explored, plain)}
    # Simulated runs teach nothing (learning pools real runs only), so both start from the priors.
    assert runs[explored]["beliefs"] == "priors explored (seed 7), then priors; updated in run"
    assert runs[plain]["beliefs"] == "priors; updated in run"
    assert runs[explored]["seed"] == runs[plain]["seed"] == 7


async def test_the_event_stream_is_in_order_with_ids_and_resumes_without_duplicates(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        run_id = await _submit(client)
        async with client.stream("GET", f"/runs/{run_id}/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = await read_messages(response, stop_after=4)
        last_id = first[-1].id
        assert last_id is not None
        async with client.stream(
            "GET", f"/runs/{run_id}/events", headers={"Last-Event-ID": last_id}
        ) as response:
            rest = await read_messages(response)
        # The whole stream again, from the start, after the run ended (kept in memory).
        async with client.stream("GET", f"/runs/{run_id}/events") as response:
            whole = await read_messages(response)
    seqs = [int(m.id) for m in first + rest if m.id is not None]
    assert seqs == list(range(len(seqs))), "ids are 0, 1, 2, ... without gaps or repeats"
    assert [m.data["seq"] for m in first + rest] == seqs
    assert first[0].event == "RunStarted" and rest[-1].event == "RunFinished"
    assert all(m.event == m.data["type"] for m in first + rest)
    assert [m.id for m in whole] == [m.id for m in first + rest]
    assert rest[-1].data["run"]["outcome"] == "completed"
    assert "spent_usd" in rest[-1].data["ledger"]


async def test_a_run_not_in_memory_gets_its_final_state_as_one_event(settings: Settings) -> None:
    with real_server(make_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            run_id = await _submit(client)
            await _until_ended(client, run_id)
    with real_server(make_app(settings)) as url:  # another server on the same database
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async with client.stream("GET", f"/runs/{run_id}/events") as response:
                (only,) = await read_messages(response)
            missing = await client.get("/runs/nosuchrun/events")
    assert only.event == "RunFinished" and only.id is None
    assert only.data["run"]["run_id"] == run_id and only.data["run"]["outcome"] == "completed"
    assert missing.status_code == 404 and "`nosuchrun`" in missing.json()["detail"]


async def test_cancel_stops_a_run_and_it_is_recorded_cancelled(served: str, settings: Settings) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=30) as client:
        answer = await client.post("/runs", json={"workflow": "slow", "budget_usd": 1})
        run_id = answer.json()["run_id"]
        async with client.stream("GET", f"/runs/{run_id}/events") as response:
            started = await read_messages(response, stop_after=3)  # the run is going
        assert started[0].event == "RunStarted"
        cancelled = await client.post(f"/runs/{run_id}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelling"
        detail = await _until_ended(client, run_id, timeout_s=10)
        again = await client.post(f"/runs/{run_id}/cancel")
    assert detail["run"]["outcome"] == "cancelled"
    assert get_run(settings.database_url, run_id).run.outcome.value == "cancelled"
    assert again.json()["status"] == "already_finished"


async def test_runs_still_going_at_shutdown_are_recorded_cancelled(settings: Settings) -> None:
    with real_server(make_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            run_id = (await client.post("/runs", json={"workflow": "slow", "budget_usd": 1})).json()["run_id"]
            deadline = time.monotonic() + 10
            while (await client.get(f"/runs/{run_id}")).json()["run"]["outcome"] != "running":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    recorded = get_run(settings.database_url, run_id).run
    assert recorded.outcome.value == "cancelled" and recorded.ended_at is not None
