"""docs/api.md: its Python example runs as written and builds an app serving the documented routes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI

from tests.api.conftest import asgi_client
from web.auth import TokenAuthorizer

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


async def test_the_example_builds_an_app_with_every_documented_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("BUDGETFLOW_DATABASE_URL", "BUDGETFLOW_API_WORKFLOWS", "BUDGETFLOW_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    app, authorizer = namespace["app"], namespace["authorizer"]
    assert isinstance(app, FastAPI) and isinstance(authorizer, TokenAuthorizer)
    try:
        async with asgi_client(app) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/workflows")).status_code == 401
            paths = set((await client.get("/openapi.json")).json()["paths"])
    finally:
        await authorizer.aclose()
    table = re.findall(r"^\| `(?:GET|POST) (/[^` ]*)`", DOC.read_text(), flags=re.M)
    documented = {path.replace("{id}", "{run_id}") for path in table}
    assert {"/runs", "/runs/{run_id}/events", "/metrics", "/healthz", "/login"} <= documented
    assert documented - {"/metrics", "/openapi.json", "/docs"} <= paths
