"""The dashboard's pages as the server renders them: numbers equal the database, recorded text is
escaped, every page needs credentials, the runs table filters, sorts and pages."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from budgetflow.settings import Settings
from storage import get_run, make_engine
from storage.models import Call, Run
from storage.usage import usage_since
from tests.api.conftest import asgi_client, make_app
from web.api.registry import WorkflowRegistry
from web.auth import authorizer_for, issue_login_token
from web.dashboard._saving import baseline_usd, saving_estimate

PAGES = ("/ui", "/ui/runs", "/ui/models", "/ui/pool")
XSS = "<script>window.__xss=1</script>"


async def _finished(client: httpx.AsyncClient, workflow: str = "quick", **extra: object) -> str:
    body = {"workflow": workflow, "budget_usd": "0.05", **extra}
    answer = await client.post("/runs", json=body)
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["run_id"]
    for _ in range(600):
        outcome = (await client.get(f"/runs/{run_id}")).json()["run"]["outcome"]
        if outcome not in ("queued", "running"):
            return run_id
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} did not finish")


def _field(page: str, name: str) -> str:
    found = re.search(rf'data-field="{name}">([^<]*)<', page)
    assert found, f"no data-field {name}"
    return found.group(1).strip()


async def test_run_page_shows_what_the_database_holds(settings: Settings) -> None:
    async with asgi_client(make_app(settings)) as client:
        run_id = await _finished(client)
        page = (await client.get(f"/ui/runs/{run_id}")).text
    detail = get_run(settings.database_url, run_id)
    llm_calls = [c for c in detail.calls if c.kind.value == "llm"]
    assert _field(page, "outcome") == detail.run.outcome.value == "completed"
    assert _field(page, "beliefs") == detail.run.beliefs == "priors; updated in run"
    assert _field(page, "spent_usd") == f"${detail.run.spent_usd:.6f}"
    assert int(_field(page, "calls")) == len(llm_calls) > 0
    for call in detail.calls:
        assert f'data-call-id="{call.call_id}"' in page  # every node of the tree is on the page
    for chart in ("burndown", "timeline", "flame"):
        svg = re.search(rf'<svg class="chart" data-chart="{chart}".*?</svg>', page, re.S)
        assert svg and re.search(r"<(rect|polyline)", svg.group(0)), f"{chart} draws nothing"
    assert f'data-run-id="{run_id}" data-live="0"' in page  # a finished run is not followed
    # The planner's decisions: the chosen allocation and its runner-up, each with its estimate.
    runner_ups = [d.info["runner_up"] for d in detail.decisions if d.info.get("runner_up")]
    assert runner_ups, "MCPP names the runner-up of its decisions"
    for alternative in runner_ups:
        for subtask, choice in alternative.items():
            assert f"{subtask} → {choice}" in page


async def test_recorded_text_is_shown_as_text(settings: Settings) -> None:
    async with asgi_client(make_app(settings)) as client:
        run_id = await _finished(client, inputs={"topic": XSS})
        pages = [(await client.get(path)).text for path in (f"/ui/runs/{run_id}", "/ui/runs")]
    assert XSS not in pages[0]
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in pages[0]
    assert "<script>" not in pages[1]


async def test_overview_and_models_agree_with_the_calls(settings: Settings) -> None:
    async with asgi_client(make_app(settings)) as client:
        runs = [await _finished(client) for _ in range(3)]
        overview = (await client.get("/ui")).text
        models = (await client.get("/ui/models")).text
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as db:
            spent = db.execute(sa.select(sa.func.sum(Run.spent_usd))).scalar_one()
            calls = db.execute(sa.select(sa.func.count()).where(Call.kind == "llm")).scalar_one()
        usage = usage_since(engine, datetime(2000, 1, 1, tzinfo=UTC))
    finally:
        engine.dispose()
    assert _field(overview, "runs") == str(len(runs))
    assert _field(overview, "spent_usd") == f"${spent:.6f}"
    assert sum(m.calls for m in usage.models) == calls
    assert sum((m.spent_usd for m in usage.models), Decimal(0)) == spent
    for chart in ("spend-by-model", "spend-by-workflow", "outcomes", "latency", "completion"):
        assert re.search(rf'data-chart="{chart}"[^>]*>.*?<rect', overview, re.S), chart
    assert 'data-table="estimates"' in models and "plan" in models


def test_saving_is_the_strongest_models_estimate_less_the_spend(settings: Settings) -> None:
    registry = WorkflowRegistry.from_modules(("tests.api.quick_workflow",), settings)
    quick = registry.get("quick")
    # Three subtasks, each strongest on `large` (0.95): 200 prompt + 250 output tokens at
    # $2.50 / $10.00 per Mtok, 1 / 0.95 attempts expected (no attempt limit).
    per_attempt = Decimal(200) * Decimal("2.50") / 10**6 + Decimal(250) * Decimal("10.00") / 10**6
    expected = per_attempt * 3 / Decimal("0.95")
    assert abs(baseline_usd(quick) - expected) < Decimal("0.000000002")
    saving = saving_estimate({"quick": (2, Decimal("0.001")), "elsewhere": (5, Decimal(1))}, registry)
    assert saving.runs == 2
    assert saving.saved_usd == baseline_usd(quick) * 2 - Decimal("0.001")


async def test_runs_table_filters_sorts_and_pages(settings: Settings) -> None:
    async with asgi_client(make_app(settings)) as client:
        ids = [await _finished(client) for _ in range(3)]
        first = (await client.get("/ui/runs?limit=2&sort=-spent_usd")).text
        listed = re.findall(r'<tr data-run-id="([^"]+)"', first)
        cursor = re.search(r'data-next href="[^"]*cursor=([^"&]+)', first)
        assert cursor, "a second page is linked"
        second = (await client.get(f"/ui/runs?limit=2&sort=-spent_usd&cursor={cursor.group(1)}")).text
        none = (await client.get("/ui/runs?workflow=slow")).text
        bad = await client.get("/ui/runs?cursor=garbage")
    rest = re.findall(r'<tr data-run-id="([^"]+)"', second)
    assert sorted(listed + rest) == sorted(ids) and len(listed) == 2
    spends = [get_run(settings.database_url, r).run.spent_usd for r in listed + rest]
    assert spends == sorted(spends, reverse=True)
    assert "No runs match." in none
    assert bad.status_code == 200 and 'class="error"' in bad.text and "cursor" in bad.text


async def test_pages_need_credentials(settings: Settings, tmp_path: Path) -> None:
    authorizer = authorizer_for(settings)
    try:
        async with asgi_client(make_app(settings, authorizer)) as client:
            for path in (*PAGES, "/ui/runs/abc", "/ui/runs/abc/live"):
                answer = await client.get(path)
                assert answer.status_code == 401, path
                assert "budgetflow serve" in answer.text and "<main" in answer.text
            token = issue_login_token(settings.database_url)
            for path in PAGES:
                answer = await client.get(path, headers={"Authorization": f"Bearer {token}"})
                assert answer.status_code == 200, path
            missing = await client.get("/ui/runs/nope", headers={"Authorization": f"Bearer {token}"})
            assert missing.status_code == 404
            assert (await client.get("/ui/static/live.js")).status_code == 200  # public assets
    finally:
        await authorizer.aclose()


@pytest.mark.parametrize("path", PAGES)
async def test_empty_database_renders_every_page(settings: Settings, path: str) -> None:
    async with asgi_client(make_app(settings)) as client:
        answer = await client.get(path)
    assert answer.status_code == 200
    assert f'<main data-page="{path.rsplit("/", 1)[-1] if path != "/ui" else "overview"}">' in answer.text


async def test_a_running_run_shows_the_money_its_calls_in_flight_hold(settings: Settings) -> None:
    async with asgi_client(make_app(settings)) as client:
        answer = await client.post("/runs", json={"workflow": "slow", "budget_usd": "0.05"})
        run_id = answer.json()["run_id"]
        page = ""
        for _ in range(500):  # until its call has started (in-process ASGI cannot stream events)
            page = (await client.get(f"/ui/runs/{run_id}")).text
            if 'data-field="reserved_usd">$0.000000<' not in page and 'data-field="reserved_usd"' in page:
                break
            await asyncio.sleep(0.02)
        await client.post(f"/runs/{run_id}/cancel")
    assert _field(page, "outcome") == "running"
    assert f'data-run-id="{run_id}" data-live="1"' in page
    assert Decimal(_field(page, "reserved_usd").lstrip("$")) > 0  # the attempt's call holds its worst case
