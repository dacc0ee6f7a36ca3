"""docs/auth.md: its Python example runs as written, and what it prints logs a browser in."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from storage.tokens import create_token
from web.auth import CSRF_COOKIE, CSRF_HEADER, TokenAuthorizer

DOC = Path(__file__).resolve().parents[2] / "docs" / "auth.md"


async def test_the_example_runs_and_guards_its_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUDGETFLOW_DATABASE_URL", raising=False)
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    authorizer = namespace["authorizer"]
    assert isinstance(authorizer, TokenAuthorizer)
    try:
        assert (tmp_path / ".budgetflow" / "runs.db").is_file()
        url = capsys.readouterr().out.strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:8000/login\?token=bf_[A-Za-z0-9_-]{43}", url)
        reader = create_token(authorizer.engine, name="reader", scopes=["read"]).token
        transport = httpx.ASGITransport(app=namespace["app"])  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            assert (await client.post("/runs")).status_code == 401
            headers = {"Authorization": f"Bearer {reader}"}
            assert (await client.post("/runs", headers=headers)).status_code == 403
            assert (await client.get(url)).status_code == 200
            assert (await client.post("/runs")).status_code == 403  # no CSRF header
            done = await client.post("/runs", headers={CSRF_HEADER: client.cookies[CSRF_COOKIE]})
            assert done.json() == {"submitted by": "login link of budgetflow serve"}
    finally:
        await authorizer.aclose()
