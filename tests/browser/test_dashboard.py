"""The dashboard under `/ui` in a real browser, checked against the database and the API.

What the tests rely on (the dashboard's conventions):

- every page: `<main data-page="overview|runs|run|models|pool">`;
- charts: inline `<svg class="chart" data-chart="NAME">` drawing `rect`, `path`, `polyline`
  or `circle` elements; the flame view `<svg data-chart="flame">` with one
  `<rect data-call-id="...">` per call;
- runs table: `<table data-table="runs">`, a `<tr data-run-id="...">` per run, filtered and
  sorted by the API's query parameters (`workflow`, `outcome`, `sort`), through the form
  `form[data-form="runs-filter"]` (`select[name=workflow]`, `select[name=outcome]`) and
  the column links `a[data-sort="spent_usd"]`;
- run page: `[data-field="outcome"]`, `[data-field="spent_usd"]` (`$0.001234`),
  `[data-field="calls"]` (model calls, as `budgetflow runs list` counts them); the calling
  tree as nested `<details data-call-id="...">` with a `<summary>`; it follows a live run
  without reloading.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from storage import get_run
from tests.browser.support import (
    FINAL_OUTCOMES,
    Screenshot,
    Server,
    parse_usd,
    recorded_summary,
    submit_run,
    wait_until_ended,
    wait_until_started,
)

pytestmark = pytest.mark.browser

PAYLOAD = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
"""Text that runs script if a page inserts it as HTML."""
_FINAL = re.compile(rf"^\s*({'|'.join(FINAL_OUTCOMES)})\s*$")

_CHARTS = """() => Array.from(document.querySelectorAll("svg[data-chart]")).map((svg) => ({
    name: svg.dataset.chart,
    drawn: Array.from(svg.querySelectorAll("rect, path, polyline, circle")).filter((shape) => {
        const box = shape.getBBox();
        return box.width > 0 || box.height > 0;
    }).length,
}))"""
"""Each chart of the page: its name and how many of its shapes have a size."""

_TREE_PARENTS = """() => Object.fromEntries(
    Array.from(document.querySelectorAll("details[data-call-id]")).map((node) => {
        const parent = node.parentElement.closest("details[data-call-id]");
        return [node.dataset.callId, parent === null ? null : parent.dataset.callId];
    }))"""
"""Each call node of the calling tree and the call node it is nested in (`null`: none)."""


@dataclass(frozen=True, kw_only=True)
class Runs:
    """The runs recorded before the tests of this module, all ended."""

    quick: tuple[str, ...]
    """Runs of `quick`, with budgets 0.05, 0.04 and 0.03 and seeds 1, 2, 3."""
    echo: str
    """A run of `echo` whose input, output and prompt hold `PAYLOAD`."""
    cancelled: str
    """A run of `slow`, cancelled once it was running."""


@pytest.fixture(scope="module")
def runs(api: httpx.Client) -> Runs:
    quick = tuple(
        submit_run(api, "quick", seed=seed, budget_usd=budget, inputs={"topic": f"topic {seed}"})
        for seed, budget in ((1, "0.05"), (2, "0.04"), (3, "0.03"))
    )
    echo = submit_run(api, "echo", inputs={"text": PAYLOAD})
    slow = submit_run(api, "slow", budget_usd="0.05")
    wait_until_started(api, slow)
    assert api.post(f"/runs/{slow}/cancel").status_code == 202
    for run_id in (*quick, echo, slow):
        wait_until_ended(api, run_id)
    return Runs(quick=quick, echo=echo, cancelled=slow)


@pytest.fixture
def page_errors(logged_in_page: Page) -> Iterator[list[str]]:
    """Uncaught script errors of the page; the test fails if there are any."""
    errors: list[str] = []
    logged_in_page.on("pageerror", lambda error: errors.append(str(error)))
    yield errors
    assert errors == [], errors


def _open(page: Page, path: str, data_page: str) -> Locator:
    """Go to `path`, check it answers 200 with its `<main data-page>`; that `main`."""
    response = page.goto(path)
    assert response is not None
    assert response.status == 200, f"{path}: {response.status} {response.text()[:500]}"
    main = page.locator(f'main[data-page="{data_page}"]')
    expect(main).to_be_visible()
    return main


def _open_run(page: Page, run_id: str) -> Locator:
    """The run's page, once its outcome is final."""
    main = _open(page, f"/ui/runs/{run_id}", "run")
    expect(main.locator('[data-field="outcome"]')).to_have_text(_FINAL)
    return main


def _assert_agrees_with_database(main: Locator, database_url: str, run_id: str) -> None:
    """Outcome, spend and model calls on the run's page are what the database recorded."""
    recorded = recorded_summary(database_url, run_id)
    expect(main.locator('[data-field="outcome"]')).to_have_text(recorded.outcome.value)
    expect(main.locator('[data-field="calls"]')).to_have_text(re.compile(rf"^\s*{recorded.calls}\s*$"))
    shown = main.locator('[data-field="spent_usd"]').inner_text()
    spent = parse_usd(shown)
    exponent = spent.as_tuple().exponent
    assert isinstance(exponent, int) and exponent <= -6, f"`{shown}`: spend to the micro-dollar at least"
    # what the page shows is the recorded spend, rounded to the digits it shows
    assert abs(spent - recorded.spent_usd) <= Decimal(1).scaleb(exponent) / 2, (shown, recorded.spent_usd)


@pytest.mark.parametrize(
    ("data_page", "path"),
    [
        ("overview", "/ui"),
        ("runs", "/ui/runs"),
        ("run", "/ui/runs/{run}"),
        ("models", "/ui/models"),
        ("pool", "/ui/pool"),
    ],
)
def test_each_page_is_served_and_saved_as_a_screenshot(
    logged_in_page: Page,
    page_errors: list[str],
    runs: Runs,
    screenshot: Screenshot,
    data_page: str,
    path: str,
) -> None:
    page = logged_in_page
    main = _open(page, path.format(run=runs.quick[0]), data_page)
    if data_page == "run":
        expect(main.locator('[data-field="outcome"]')).to_have_text(_FINAL)
    if data_page == "models":  # the registered workflows' models
        expect(main).to_contain_text("small")
        expect(main).to_contain_text("large")
    screenshot(page, data_page)


def test_a_run_page_follows_the_run_live_to_its_end_and_agrees_with_the_database(
    logged_in_page: Page, page_errors: list[str], api: httpx.Client, server: Server, screenshot: Screenshot
) -> None:
    page = logged_in_page
    run_id = submit_run(api, "slow", budget_usd="0.05", seed=5)
    wait_until_started(api, run_id)  # recorded and running: it takes minutes unless cancelled
    main = _open(page, f"/ui/runs/{run_id}", "run")
    outcome = main.locator('[data-field="outcome"]')
    expect(outcome).to_have_text(re.compile(r"^\s*running\s*$"))
    screenshot(page, "running")
    page.evaluate("() => { window.__sameDocument = true; }")
    navigations: list[str] = []
    page.on(
        "framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None
    )

    assert api.post(f"/runs/{run_id}/cancel").status_code == 202
    expect(outcome).to_have_text(re.compile(r"^\s*cancelled\s*$"))

    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    assert navigations == []
    _assert_agrees_with_database(main, server.database_url, run_id)
    screenshot(page, "cancelled")


def test_a_finished_run_page_shows_what_the_database_recorded(
    logged_in_page: Page, page_errors: list[str], runs: Runs, server: Server
) -> None:
    for run_id in runs.quick:
        main = _open_run(logged_in_page, run_id)
        _assert_agrees_with_database(main, server.database_url, run_id)
        assert recorded_summary(server.database_url, run_id).calls > 0


def test_the_calling_tree_nests_every_call_under_its_parent_and_a_node_opens_and_closes(
    logged_in_page: Page, page_errors: list[str], runs: Runs, server: Server, screenshot: Screenshot
) -> None:
    page = logged_in_page
    main = _open_run(page, runs.quick[0])
    calls = get_run(server.database_url, runs.quick[0]).calls
    ids = {call.call_id for call in calls}
    assert len(main.locator("details[data-call-id]").all()) == len(ids), "one node per call"
    shown: dict[str, Any] = page.evaluate(_TREE_PARENTS)
    assert shown == {c.call_id: c.parent_call_id if c.parent_call_id in ids else None for c in calls}

    child = next(c for c in calls if c.kind.value == "llm" and c.parent_call_id in ids)
    node = main.locator(f'details[data-call-id="{child.parent_call_id}"]')
    nested = node.locator(f'details[data-call-id="{child.call_id}"]')
    for outer in node.locator("xpath=ancestor::details").all():  # outermost first
        if not outer.evaluate("(d) => d.open"):
            outer.locator(":scope > summary").click()
    summary = node.locator(":scope > summary")
    expect(summary).to_be_visible()
    if node.evaluate("(d) => d.open"):
        summary.click()
    expect(node).to_have_js_property("open", False)
    expect(nested).to_be_hidden()
    summary.click()
    expect(node).to_have_js_property("open", True)
    expect(nested).to_be_visible()
    screenshot(page, "tree-open")


def test_the_flame_view_draws_a_box_for_every_call(
    logged_in_page: Page, page_errors: list[str], runs: Runs, server: Server
) -> None:
    main = _open_run(logged_in_page, runs.quick[0])
    boxes = main.locator('svg[data-chart="flame"] rect[data-call-id]')
    expect(boxes.first).to_be_visible()
    drawn: list[dict[str, Any]] = boxes.evaluate_all(
        "(rects) => rects.map((r) => ({id: r.dataset.callId, width: r.getBBox().width}))"
    )
    assert {box["id"] for box in drawn} == {
        c.call_id for c in get_run(server.database_url, runs.quick[0]).calls
    }
    assert all(box["width"] > 0 for box in drawn), drawn


@pytest.mark.parametrize(("data_page", "path"), [("overview", "/ui"), ("run", "/ui/runs/{run}")])
def test_the_charts_are_drawn(
    logged_in_page: Page, page_errors: list[str], runs: Runs, data_page: str, path: str
) -> None:
    _open(logged_in_page, path.format(run=runs.quick[0]), data_page)
    charts: list[dict[str, Any]] = logged_in_page.evaluate(_CHARTS)
    assert logged_in_page.locator("svg.chart[data-chart]").count() >= 1, charts
    assert all(chart["drawn"] > 0 for chart in charts), charts
    if data_page == "run":
        assert "flame" in {chart["name"] for chart in charts}


def test_text_from_a_run_is_shown_as_text_and_never_runs(
    logged_in_page: Page, page_errors: list[str], runs: Runs, server: Server, screenshot: Screenshot
) -> None:
    page = logged_in_page
    recorded = get_run(server.database_url, runs.echo)
    assert recorded.run.inputs["text"] == PAYLOAD
    assert any(s.output_preview and PAYLOAD in s.output_preview for s in recorded.subtasks)

    main = _open_run(page, runs.echo)
    expect(main.get_by_text(PAYLOAD).filter(visible=True).first).to_be_visible()
    page.evaluate("() => document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert main.locator('img[src="x"]').count() == 0
    screenshot(page, "payload-as-text")
    # shown as the text it is everywhere, the run's inputs included (not as `\u003cscript\u003e`)
    assert "\\u003c" not in main.inner_text(), "text shown escaped as JSON, not as the text it is"
    for path, data_page in (("/ui/runs", "runs"), ("/ui", "overview")):
        _open(page, path, data_page)
        assert page.evaluate("() => typeof window.__xss") == "undefined", path


def _row_ids(page: Page) -> list[str]:
    table = page.locator('table[data-table="runs"]')
    expect(table).to_be_visible()
    ids: list[str] = table.locator("tr[data-run-id]").evaluate_all(
        "(rows) => rows.map((r) => r.dataset.runId)"
    )
    return ids


def _api_ids(api: httpx.Client, query: str) -> list[str]:
    answer = api.get(f"/runs?{query}").raise_for_status().json()
    return [run["run_id"] for run in answer["runs"]]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "sort=started_at",
        "sort=-spent_usd",
        "sort=spent_usd",
        "sort=budget_usd",
        "workflow=quick",
        "outcome=cancelled",
        "workflow=quick&sort=-budget_usd",
    ],
)
def test_the_runs_table_filters_and_sorts_as_the_api_does(
    logged_in_page: Page, page_errors: list[str], runs: Runs, api: httpx.Client, query: str
) -> None:
    _open(logged_in_page, f"/ui/runs?{query}", "runs")
    expected = _api_ids(api, query)
    assert expected, query
    assert _row_ids(logged_in_page) == expected


def test_the_runs_table_is_filtered_by_its_form_and_sorted_by_its_column_links(
    logged_in_page: Page, page_errors: list[str], runs: Runs, api: httpx.Client, screenshot: Screenshot
) -> None:
    page = logged_in_page
    _open(page, "/ui/runs", "runs")
    form = page.locator('form[data-form="runs-filter"]')
    form.locator('select[name="workflow"]').select_option("quick")
    with page.expect_navigation():
        form.locator('[type="submit"]').click()
    assert _row_ids(page) == _api_ids(api, "workflow=quick")
    assert set(_row_ids(page)) == set(runs.quick)

    with page.expect_navigation():
        page.locator('table[data-table="runs"] a[data-sort="spent_usd"]').click()
    first = _row_ids(page)
    with page.expect_navigation():
        page.locator('table[data-table="runs"] a[data-sort="spent_usd"]').click()
    second = _row_ids(page)
    assert {tuple(first), tuple(second)} == {
        tuple(_api_ids(api, "workflow=quick&sort=-spent_usd")),
        tuple(_api_ids(api, "workflow=quick&sort=spent_usd")),
    }
    screenshot(page, "runs-sorted")


@pytest.mark.parametrize("path", ["/ui/runs", "/ui/runs/{run}", "/ui/models", "/ui/pool"])
def test_every_dashboard_page_refuses_a_browser_without_a_session(page: Page, runs: Runs, path: str) -> None:
    response = page.goto(path.format(run=runs.quick[0]))
    assert response is not None and response.status == 401, response and response.status
    expect(page.locator("body")).to_contain_text(re.compile(r"log ?in", re.IGNORECASE))
    assert page.locator("table[data-table], svg[data-chart], [data-field]").count() == 0
