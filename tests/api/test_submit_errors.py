"""Bad submissions get 4xx naming the field and the fix, and nothing is recorded or started."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from budgetflow.settings import Settings
from storage import search_runs
from storage.migrate import upgrade

BAD: dict[str, tuple[dict[str, Any], str, str]] = {
    "unknown workflow": ({"workflow": "quik"}, "workflow", "did you mean `quick`"),
    "negative budget": ({"workflow": "quick", "budget_usd": -1}, "budget_usd", "give a positive budget"),
    "budget not a number": ({"workflow": "quick", "budget_usd": "lots"}, "budget_usd", "is not an amount"),
    "budget too small": ({"workflow": "quick", "budget_usd": "1e-12"}, "budget_usd", "one nano-dollar"),
    "no budget, no default": ({"workflow": "slow"}, "budget_usd", "give `budget_usd`"),
    "zero deadline": ({"workflow": "quick", "deadline_s": 0}, "deadline_s", "deadline_s"),
    "unknown policy": ({"workflow": "quick", "policy": "mcp"}, "policy", "mcpp"),
    "policy model unknown": ({"workflow": "quick", "policy": "fixed:huge:2"}, "policy", "not in the catalog"),
    "negative seed": ({"workflow": "quick", "seed": -1}, "seed", "greater than or equal to 0"),
    "explore not a boolean": ({"workflow": "quick", "explore": "yes"}, "explore", "`true` or `false`"),
    "explore a number": ({"workflow": "quick", "explore": 1}, "explore", "got `1`"),
    "unknown field": ({"workflow": "quick", "budget": 1}, "budget", "remove it"),
    "missing workflow": ({}, "workflow", "is required"),
    "undeclared input": ({"workflow": "quick", "inputs": {"topik": "x"}}, "inputs", "topik"),
}


@pytest.mark.parametrize("case", BAD)
async def test_a_bad_submission_names_the_field_and_changes_nothing(
    client: httpx.AsyncClient, settings: Settings, case: str
) -> None:
    body, field, hint = BAD[case]
    answer = await client.post("/runs", json=body)
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["errors"][0]["field"] == field
    assert f"`{field}`" in problem["detail"] and hint in problem["detail"], problem["detail"]
    upgrade(settings.database_url)
    assert search_runs(settings.database_url).total == 0
    assert (await client.get("/runs")).json()["total"] == 0


async def test_a_body_that_is_not_json_is_refused_readably(client: httpx.AsyncClient) -> None:
    answer = await client.post("/runs", content=b"{workflow:", headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert "not valid JSON" in answer.json()["detail"]


async def test_unknown_runs_are_404_with_where_to_look(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/runs/abc"), ("POST", "/runs/abc/cancel"), ("GET", "/runs/abc/events")):
        answer = await client.request(method, path)
        assert answer.status_code == 404, (path, answer.text)
        assert "`abc`" in answer.json()["detail"] and "GET /runs" in answer.json()["detail"]
    bad_resume = await client.get("/runs/abc/events", headers={"Last-Event-ID": "seven"})
    assert bad_resume.status_code == 422 and bad_resume.json()["errors"][0]["field"] == "Last-Event-ID"
