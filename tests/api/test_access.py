"""Every route but /healthz asks the authorizer, for the scope it needs; /metrics can be public."""

from __future__ import annotations

import inspect
from typing import Literal

import httpx
import pytest
from fastapi import HTTPException, Request

from budgetflow.settings import Settings
from tests.api.conftest import asgi_client, make_app
from web.api import create_app

Scope = Literal["read", "submit", "admin"]

ROUTES: list[tuple[str, str, Scope]] = [
    ("POST", "/runs", "submit"),
    ("GET", "/runs", "read"),
    ("GET", "/runs/abc", "read"),
    ("GET", "/runs/abc/events", "read"),
    ("POST", "/runs/abc/cancel", "submit"),
    ("GET", "/workflows", "read"),
    ("GET", "/models", "read"),
    ("GET", "/metrics", "read"),
]


class Refuse:
    """Refuses every request: 401 without a bearer header, else 403 for scopes above `read`."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Scope]] = []

    async def authorize(self, request: Request, scope: Scope) -> None:
        self.asked.append((request.url.path, scope))
        if "authorization" not in request.headers:
            raise HTTPException(401, "no token", headers={"WWW-Authenticate": "Bearer"})
        if scope != "read":
            raise HTTPException(403, f"needs scope `{scope}`")


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
async def test_every_route_but_healthz_asks_for_its_scope(
    settings: Settings, method: str, path: str, scope: Scope
) -> None:
    refuse = Refuse()
    async with asgi_client(make_app(settings, refuse)) as client:
        answer = await client.request(method, path, json={"workflow": "quick"} if method == "POST" else None)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert (path, scope) in refuse.asked
        with_token = await client.request(method, path, headers={"Authorization": "Bearer x"})
        assert (with_token.status_code == 403) == (scope != "read")
        assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert ("/healthz", "read") not in refuse.asked


async def test_metrics_can_be_public_and_count_the_runs(settings: Settings) -> None:
    async with asgi_client(make_app(settings, Refuse(), metrics_public=True)) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200 and "budgetflow_runs_total" in answer.text


def test_the_authorizer_has_no_default() -> None:
    parameter = inspect.signature(create_app).parameters["authorizer"]
    assert parameter.default is inspect.Parameter.empty and parameter.kind is inspect.Parameter.KEYWORD_ONLY


async def test_workflows_and_models_describe_what_the_server_runs(client: httpx.AsyncClient) -> None:
    workflows = {w["name"]: w for w in (await client.get("/workflows")).json()}
    assert set(workflows) == {"quick", "slow"}
    quick = workflows["quick"]
    assert quick["module"] == "tests.api.quick_workflow" and quick["inputs"] == ["topic"]
    assert quick["budget_usd"] == "0.05" and quick["deadline_s"] == 600
    assert [s["name"] for s in quick["subtasks"]] == ["plan", "draft", "review"]
    assert quick["subtasks"][1]["after"] == ["plan"]
    models = {m["name"]: m for m in (await client.get("/models")).json()}
    assert models["large"]["input_price_per_mtok"] == "2.5" and models["large"]["simulated"] is True
    assert sorted(models["small"]["workflows"]) == ["quick", "slow"]


async def test_the_openapi_schema_is_published(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {"/runs", "/runs/{run_id}", "/runs/{run_id}/events", "/runs/{run_id}/cancel"} <= set(
        schema["paths"]
    )
    assert "RunSubmission" in schema["components"]["schemas"]
