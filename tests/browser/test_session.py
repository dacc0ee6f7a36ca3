"""A real browser against `budgetflow serve`: the printed login URL opens a session the API
accepts, a browser without one is refused, a wrong token gets a page saying why, and a
`POST` from the page's JavaScript needs the CSRF header (docs/auth.md)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from storage import get_run
from tests.browser.support import FINAL_OUTCOMES, Screenshot, Server, log_in, wait_until_ended

pytestmark = pytest.mark.browser

_POST_RUN = """async ({body, csrf}) => {
    const headers = {"Content-Type": "application/json"};
    if (csrf !== null) headers["X-CSRF-Token"] = csrf;
    const response = await fetch("/runs", {method: "POST", headers, body: JSON.stringify(body)});
    return {status: response.status, body: await response.json()};
}"""
"""`POST /runs` from the page, with `X-CSRF-Token: csrf` unless `csrf` is null."""

_CSRF_COOKIE = """() => {
    const found = document.cookie.split("; ").find((c) => c.startsWith("budgetflow_csrf="));
    return found === undefined ? null : decodeURIComponent(found.slice("budgetflow_csrf=".length));
}"""
"""The `budgetflow_csrf` cookie as the page's JavaScript reads it."""


def _fetch_status(page: Page, path: str) -> int:
    status: int = page.evaluate("async (path) => (await fetch(path)).status", path)
    return status


def test_the_printed_login_url_opens_a_session_the_api_accepts(
    page: Page, server: Server, screenshot: Screenshot
) -> None:
    response = page.goto(server.login_url)
    assert response is not None and response.status == 200, response and response.text()
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    page.wait_for_url(lambda url: "/login" not in url)  # the login page moves on by itself
    screenshot(page, "after-login")

    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    session, csrf = cookies["budgetflow_session"], cookies["budgetflow_csrf"]
    assert session.get("httpOnly") is True and session.get("sameSite") == "Strict"
    assert csrf.get("httpOnly") is False and csrf.get("sameSite") == "Strict"
    # HttpOnly, seen from the page: its JavaScript reads the CSRF cookie, never the session
    readable: str = page.evaluate("document.cookie")
    assert "budgetflow_csrf=" in readable and "budgetflow_session" not in readable

    assert _fetch_status(page, "/runs") == 200
    listing: dict[str, Any] = page.evaluate("async () => (await fetch('/runs')).json()")
    assert set(listing) >= {"runs", "total", "next_cursor"}
    assert _fetch_status(page, "/workflows") == 200


@pytest.mark.parametrize("path", ["/runs", "/ui"])
def test_a_browser_without_a_session_is_refused(page: Page, server: Server, path: str) -> None:
    response = page.goto(server.base_url + path)
    assert response is not None
    assert response.status == 401, f"{path}: {response.status} {response.text()[:300]}"
    assert re.search(r"log ?in", page.locator("body").inner_text(), re.IGNORECASE), page.content()
    assert page.context.cookies() == []


def test_a_login_url_with_a_wrong_token_is_refused_with_a_page_saying_why(
    page: Page, server: Server, screenshot: Screenshot
) -> None:
    wrong = re.sub(r"token=bf_[\w-]+", "token=bf_" + "x" * 43, server.login_url)
    assert wrong != server.login_url
    response = page.goto(wrong)
    assert response is not None and response.status == 401, response and response.text()
    body = page.locator("body")
    expect(body).to_contain_text("the login token is unknown, expired or revoked")
    expect(body).to_contain_text("budgetflow tokens create")  # what to do instead
    screenshot(page, "wrong-token")
    assert page.context.cookies() == []
    assert _fetch_status(page, "/runs") == 401

    response = page.goto(f"{server.base_url}/login")  # no token at all
    assert response is not None and response.status == 401
    expect(body).to_contain_text("`/login` needs `?token=bf_...`")
    assert page.context.cookies() == []


def test_a_post_from_the_page_needs_the_csrf_header(page: Page, server: Server, api: httpx.Client) -> None:
    log_in(page, server.login_url)
    body = {"workflow": "quick", "budget_usd": "0.05", "inputs": {"topic": "CSRF"}, "seed": 7}
    before = api.get("/runs").raise_for_status().json()["total"]

    refused: dict[str, Any] = page.evaluate(_POST_RUN, {"body": body, "csrf": None})
    assert refused["status"] == 403, refused
    assert "X-CSRF-Token" in refused["body"]["detail"]
    forged: dict[str, Any] = page.evaluate(_POST_RUN, {"body": body, "csrf": "not-the-session-token"})
    assert forged["status"] == 403, forged

    csrf: str | None = page.evaluate(_CSRF_COOKIE)
    assert csrf
    accepted: dict[str, Any] = page.evaluate(_POST_RUN, {"body": body, "csrf": csrf})
    assert accepted["status"] == 202, accepted
    run_id: str = accepted["body"]["run_id"]

    assert wait_until_ended(api, run_id) in FINAL_OUTCOMES
    recorded = get_run(server.database_url, run_id).run
    assert recorded.workflow == "quick" and dict(recorded.inputs) == {"topic": "CSRF"}
    # the two refused posts started nothing: one run more than before
    assert api.get("/runs").raise_for_status().json()["total"] == before + 1
