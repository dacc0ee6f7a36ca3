"""GET /runs: filters, sorts and cursor pages over recorded runs; bad parameters name themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from budgetflow.settings import Settings
from orchestrator.records import Outcome, RunRecord
from storage import SqlRecorder

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OUTCOMES = [Outcome.COMPLETED, Outcome.BUDGET_EXHAUSTED, Outcome.FAILED]


async def _record_runs(settings: Settings, count: int = 23) -> list[RunRecord]:
    """`count` finished runs of two workflows, an hour apart, with various outcomes and spend."""
    recorder = await SqlRecorder.open(settings.database_url)
    runs = []
    try:
        for i in range(count):
            started = RunRecord(
                run_id=f"run{i:03d}",
                workflow="quick" if i % 2 == 0 else "other",
                policy="mcpp",
                budget_usd=Decimal("1"),
                deadline_s=None,
                seed=i,
                simulated=True,
                started_at=T0 + timedelta(hours=i),
            )
            await recorder.run_started(started)
            ended = RunRecord(
                **{
                    **started.__dict__,
                    "outcome": OUTCOMES[i % 3],
                    "spent_usd": Decimal(i % 5) / 100,
                    "makespan_s": 1.0,
                    "ended_at": started.started_at + timedelta(seconds=1),
                }
            )
            await recorder.run_finished(ended)
            runs.append(ended)
    finally:
        await recorder.aclose()
    return runs


async def _all_pages(client: httpx.AsyncClient, **params: str | int) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor = None
    pages = 0
    while True:
        answer = await client.get("/runs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        ids += [r["run_id"] for r in page["runs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, pages


async def test_pages_by_cursor_cover_every_run_once_in_order(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    runs = await _record_runs(settings)
    ids, pages = await _all_pages(client, limit=5)
    assert ids == [r.run_id for r in sorted(runs, key=lambda r: r.started_at, reverse=True)]
    assert pages == 5
    first = (await client.get("/runs", params={"limit": 5})).json()
    assert first["total"] == 23 and len(first["runs"]) == 5
    oldest, _ = await _all_pages(client, limit=4, sort="started_at")
    assert oldest == list(reversed(ids))
    by_spend, _ = await _all_pages(client, limit=3, sort="-spent_usd")
    expected = sorted(runs, key=lambda r: (r.spent_usd, r.run_id), reverse=True)
    assert by_spend == [r.run_id for r in expected]


async def test_filters_by_workflow_outcome_and_time(client: httpx.AsyncClient, settings: Settings) -> None:
    runs = await _record_runs(settings)
    params: dict[str, str | int] = {
        "workflow": "quick",
        "outcome": "completed",
        "started_after": (T0 + timedelta(hours=3)).isoformat(),
        "started_before": (T0 + timedelta(hours=20)).isoformat(),
        "limit": 2,
    }
    ids, _ = await _all_pages(client, **params)
    expected = [
        r.run_id
        for r in reversed(runs)
        if r.workflow == "quick"
        and r.outcome is Outcome.COMPLETED
        and T0 + timedelta(hours=3) <= r.started_at < T0 + timedelta(hours=20)
    ]
    assert ids == expected and expected
    page = (await client.get("/runs", params=params)).json()
    assert page["total"] == len(expected)
    assert all(r["workflow"] == "quick" and r["outcome"] == "completed" for r in page["runs"])


async def test_bad_listing_parameters_name_the_field(client: httpx.AsyncClient, settings: Settings) -> None:
    await _record_runs(settings, count=3)
    cases: dict[str, dict[str, str | int]] = {
        "limit": {"limit": 0},
        "outcome": {"outcome": "done"},
        "sort": {"sort": "price"},
        "started_after": {"started_after": "yesterday"},
        "cursor": {"cursor": "not-a-cursor"},
    }
    for field, params in cases.items():
        answer = await client.get("/runs", params=params)
        assert answer.status_code == 422, (field, answer.text)
        body = answer.json()
        assert body["errors"][0]["field"] == field, body
        assert f"`{field}`" in body["detail"]
    first = (await client.get("/runs", params={"limit": 1})).json()
    other_sort = await client.get("/runs", params={"cursor": first["next_cursor"], "sort": "spent_usd"})
    assert other_sort.status_code == 422 and "start again without a cursor" in other_sort.json()["detail"]
