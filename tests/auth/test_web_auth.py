"""TokenAuthorizer on a small FastAPI app over ASGI: bearer tokens, scopes, login, cookies and CSRF."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from sqlalchemy.engine import Engine

from budgetflow.settings import Settings, load_settings
from orchestrator.errors import ConfigError
from storage.tokens import Scope, create_token, list_tokens, revoke_token
from web._session import SessionCodec
from web.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    LOGIN_TOKEN_TTL,
    SESSION_COOKIE,
    Principal,
    TokenAuthorizer,
    auth_router,
    authorizer_for,
    issue_login_token,
    login_url,
)


def _needs(authorizer: TokenAuthorizer, scope: Scope) -> Callable[[Request], Awaitable[None]]:
    async def check(request: Request) -> None:
        await authorizer.authorize(request, scope)

    return check


def make_app(authorizer: TokenAuthorizer) -> FastAPI:
    """Three routes, one per scope, behind the authorizer; and the login router."""
    app = FastAPI()
    app.include_router(auth_router(authorizer))

    @app.get("/runs", dependencies=[Depends(_needs(authorizer, "read"))])
    async def runs(request: Request) -> dict[str, str]:
        principal: Principal = request.state.principal
        return {"name": principal.name, "via": principal.via}

    @app.post("/runs", dependencies=[Depends(_needs(authorizer, "submit"))])
    async def submit() -> dict[str, str]:
        return {"submitted": "yes"}

    @app.delete("/everything", dependencies=[Depends(_needs(authorizer, "admin"))])
    async def wipe() -> dict[str, str]:
        return {"wiped": "yes"}

    return app


@pytest.fixture
async def authorizer(engine: Engine) -> AsyncIterator[TokenAuthorizer]:
    made = TokenAuthorizer(engine)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def client(authorizer: TokenAuthorizer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(authorizer))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as made:
        yield made


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each `Set-Cookie` of a response, by cookie name, as sent."""
    return {
        next(iter(SimpleCookie(header))): header.lower() for header in response.headers.get_list("set-cookie")
    }


async def test_no_or_bad_credentials_get_401_with_www_authenticate_and_how_to_get_a_token(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    revoked = create_token(engine, name="old", scopes=["admin"])
    revoke_token(engine, revoked.info.token_id)
    for headers in (
        {},
        _bearer("bf_not-a-token"),
        _bearer(revoked.token),
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ):
        response = await client.get("/runs", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "`budgetflow tokens create --name NAME --scope read`" in response.json()["detail"]
    response = await client.post("/runs")
    assert "--scope submit" in response.json()["detail"]


async def test_bearer_scopes_read_submit_admin(client: httpx.AsyncClient, engine: Engine) -> None:
    tokens = {
        scope: create_token(engine, name=f"{scope}-bot", scopes=[scope]).token
        for scope in ("read", "submit", "admin")
    }
    allowed = {
        ("read", "GET"): 200,
        ("read", "POST"): 403,
        ("read", "DELETE"): 403,
        ("submit", "GET"): 200,
        ("submit", "POST"): 200,
        ("submit", "DELETE"): 403,
        ("admin", "GET"): 200,
        ("admin", "POST"): 200,
        ("admin", "DELETE"): 200,
    }
    paths = {"GET": "/runs", "POST": "/runs", "DELETE": "/everything"}
    for (scope, method), status in allowed.items():
        response = await client.request(method, paths[method], headers=_bearer(tokens[scope]))
        assert response.status_code == status, (scope, method, response.text)
    refused = await client.post("/runs", headers=_bearer(tokens["read"]))
    detail = refused.json()["detail"]
    assert "token `read-bot`" in detail and "has scope `read`" in detail
    assert "needs scope `submit`" in detail and "--scope submit" in detail
    seen = await client.get("/runs", headers=_bearer(tokens["read"]))
    assert seen.json() == {"name": "read-bot", "via": "bearer"}


async def test_an_expired_token_is_refused(client: httpx.AsyncClient, engine: Engine) -> None:
    old = create_token(
        engine,
        name="old",
        scopes=["read"],
        expires_in=timedelta(minutes=1),
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    assert (await client.get("/runs", headers=_bearer(old.token))).status_code == 401


async def test_login_sets_an_httponly_strict_session_cookie_and_a_readable_csrf_cookie(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    token = create_token(engine, name="me", scopes=["submit"]).token
    response = await client.get("/login", params={"token": token, "next": "/runs/abc"})
    assert response.status_code == 200
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert 'content="0;url=/runs/abc"' in response.text
    cookies = _set_cookies(response)
    session, csrf = cookies[SESSION_COOKIE], cookies[CSRF_COOKIE]
    assert "httponly" in session and "samesite=strict" in session and "path=/" in session
    assert "httponly" not in csrf and "samesite=strict" in csrf
    assert "secure" not in session  # plain http (a loopback server); https gets `Secure`
    assert token not in str(response.headers)

    seen = await client.get("/runs")
    assert seen.status_code == 200 and seen.json() == {"name": "me", "via": "session"}


async def test_login_over_https_marks_the_cookies_secure(authorizer: TokenAuthorizer, engine: Engine) -> None:
    token = create_token(engine, name="me", scopes=["read"]).token
    transport = httpx.ASGITransport(app=make_app(authorizer))
    async with httpx.AsyncClient(transport=transport, base_url="https://dash.example") as client:
        response = await client.get("/login", params={"token": token})
    cookies = _set_cookies(response)
    assert "secure" in cookies[SESSION_COOKIE] and "secure" in cookies[CSRF_COOKIE]


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "javascript:alert(1)", "/\\evil"]
)
async def test_login_goes_only_to_pages_of_this_site(
    client: httpx.AsyncClient, engine: Engine, target: str
) -> None:
    token = create_token(engine, name="me", scopes=["read"]).token
    response = await client.get("/login", params={"token": token, "next": target})
    assert 'content="0;url=/"' in response.text and "evil" not in response.text


async def test_login_with_a_bad_token_sets_no_cookie(client: httpx.AsyncClient) -> None:
    for params in ({"token": "bf_nope"}, {}):
        response = await client.get("/login", params=params)
        assert response.status_code == 401
        assert "budgetflow tokens create" in response.json()["detail"]
        assert "set-cookie" not in response.headers
    assert (await client.get("/runs")).status_code == 401


async def test_a_cookie_session_post_needs_the_csrf_header(client: httpx.AsyncClient, engine: Engine) -> None:
    token = create_token(engine, name="me", scopes=["submit"]).token
    await client.get("/login", params={"token": token})
    csrf = client.cookies[CSRF_COOKIE]

    missing = await client.post("/runs")
    assert missing.status_code == 403
    assert f"`{CSRF_HEADER}` header" in missing.json()["detail"]
    assert (await client.post("/runs", headers={CSRF_HEADER: csrf[:-1] + "x"})).status_code == 403
    assert (await client.post("/runs", headers={CSRF_HEADER: ""})).status_code == 403
    ok = await client.post("/runs", headers={CSRF_HEADER: csrf})
    assert ok.status_code == 200 and ok.json() == {"submitted": "yes"}
    # a safe method needs none
    assert (await client.get("/runs")).status_code == 200


async def test_the_csrf_token_of_one_session_does_not_fit_another(
    authorizer: TokenAuthorizer, engine: Engine
) -> None:
    token = create_token(engine, name="me", scopes=["submit"]).token
    transport = httpx.ASGITransport(app=make_app(authorizer))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as first,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as second,
    ):
        await first.get("/login", params={"token": token})
        await second.get("/login", params={"token": token})
        planted = second.cookies[CSRF_COOKIE]
        assert planted != first.cookies[CSRF_COOKIE]
        first.cookies.set(CSRF_COOKIE, planted)
        assert (await first.post("/runs", headers={CSRF_HEADER: planted})).status_code == 403


async def test_a_bearer_request_needs_no_csrf_even_with_a_session_cookie(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    reader = create_token(engine, name="me", scopes=["read"]).token
    writer = create_token(engine, name="ci", scopes=["submit"]).token
    await client.get("/login", params={"token": reader})
    response = await client.post("/runs", headers=_bearer(writer))
    assert response.status_code == 200


async def test_a_session_keeps_its_tokens_scope(client: httpx.AsyncClient, engine: Engine) -> None:
    token = create_token(engine, name="viewer", scopes=["read"]).token
    await client.get("/login", params={"token": token})
    response = await client.post("/runs", headers={CSRF_HEADER: client.cookies[CSRF_COOKIE]})
    assert response.status_code == 403 and "needs scope `submit`" in response.json()["detail"]


async def test_forged_or_tampered_session_cookies_are_refused(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    token = create_token(engine, name="me", scopes=["read"]).token
    await client.get("/login", params={"token": token})
    value = client.cookies[SESSION_COOKIE]
    payload, _, signature = value.rpartition(".")
    token_id, expires, nonce = payload.split(":")
    other_key = SessionCodec(None).issue(int(token_id), now=datetime.now(UTC), ttl=timedelta(hours=1))[0]
    forged = [
        f"{int(token_id) + 1}:{expires}:{nonce}.{signature}",
        f"{token_id}:{int(expires) + 3600}:{nonce}.{signature}",
        payload,
        "garbage",
        f"{payload}.{other_key.rpartition('.')[2]}",
        other_key,
    ]
    for cookie in forged:
        client.cookies.set(SESSION_COOKIE, cookie)
        response = await client.get("/runs")
        assert response.status_code == 401, cookie
        assert "log in again" in response.json()["detail"]


async def test_revoking_the_token_ends_its_sessions(client: httpx.AsyncClient, engine: Engine) -> None:
    new = create_token(engine, name="me", scopes=["read"])
    await client.get("/login", params={"token": new.token})
    assert (await client.get("/runs")).status_code == 200
    revoke_token(engine, new.info.token_id)
    response = await client.get("/runs")
    assert response.status_code == 401 and "expired or revoked" in response.json()["detail"]


def test_sessions_expire_and_never_outlive_their_signature() -> None:
    codec = SessionCodec(b"k" * 32)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    value, session = codec.issue(7, now=now, ttl=timedelta(hours=1))
    assert session.token_id == 7 and session.expires_at == now + timedelta(hours=1)
    assert codec.read(value, now=now + timedelta(minutes=59)) == session
    assert codec.read(value, now=now + timedelta(hours=1)) is None
    assert SessionCodec(b"x" * 32).read(value, now=now) is None
    assert SessionCodec(b"k" * 32).read(value, now=now) == session  # a shared secret: any process
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SessionCodec(b"short")


async def test_a_session_ends_when_its_token_expires(client: httpx.AsyncClient, engine: Engine) -> None:
    token = create_token(engine, name="brief", scopes=["read"], expires_in=timedelta(minutes=5)).token
    response = await client.get("/login", params={"token": token})
    max_age = int(_set_cookies(response)[SESSION_COOKIE].split("max-age=")[1].split(";")[0])
    assert 0 < max_age <= 300


async def test_logout_clears_the_cookies_and_needs_csrf_while_logged_in(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    token = create_token(engine, name="me", scopes=["read"]).token
    await client.get("/login", params={"token": token})
    assert (await client.post("/logout")).status_code == 403
    response = await client.post("/logout", headers={CSRF_HEADER: client.cookies[CSRF_COOKIE]})
    assert response.status_code == 204
    cleared = _set_cookies(response)
    assert set(cleared) == {SESSION_COOKIE, CSRF_COOKIE}
    assert all("max-age=0" in header for header in cleared.values())
    assert (await client.get("/runs")).status_code == 401
    assert (await client.post("/logout")).status_code == 204  # no session: nothing to protect


async def test_serve_login_url_opens_an_admin_session(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'runs.db'}")
    authorizer = authorizer_for(settings)
    try:
        token = issue_login_token(authorizer.engine)
        url = login_url("http://127.0.0.1:8000/", token)
        assert url == f"http://127.0.0.1:8000/login?token={token}"
        (stored,) = list_tokens(authorizer.engine)
        assert stored.scopes == ("admin",) and stored.expires_at is not None
        assert stored.expires_at - stored.created_at == LOGIN_TOKEN_TTL
        transport = httpx.ASGITransport(app=make_app(authorizer))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            assert (await client.get(url)).status_code == 200
            wiped = await client.delete("/everything", headers={CSRF_HEADER: client.cookies[CSRF_COOKIE]})
            assert wiped.status_code == 200
    finally:
        await authorizer.aclose()
    assert login_url("http://h", "bf_a-b", next_path="/runs/1") == "http://h/login?token=bf_a-b&next=/runs/1"


async def test_a_configured_session_secret_is_shared_by_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUDGETFLOW_SESSION_SECRET", "s" * 40)
    monkeypatch.setenv("BUDGETFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'runs.db'}")
    settings = load_settings(cwd=tmp_path)
    assert settings.session_secret == "s" * 40 and "s" * 40 not in repr(settings)
    one, two = authorizer_for(settings), authorizer_for(settings)
    try:
        token = create_token(one.engine, name="me", scopes=["read"]).token
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(one)), base_url="http://t") as first,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=make_app(two)), base_url="http://t"
            ) as second,
        ):
            await first.get("/login", params={"token": token})
            second.cookies.set(SESSION_COOKIE, first.cookies[SESSION_COOKIE])
            assert (await second.get("/runs")).status_code == 200
    finally:
        await one.aclose()
        await two.aclose()
    monkeypatch.setenv("BUDGETFLOW_SESSION_SECRET", "short")
    with pytest.raises(ConfigError, match="`BUDGETFLOW_SESSION_SECRET` is 5 characters long") as info:
        load_settings(cwd=tmp_path)
    assert "short" not in str(info.value)
