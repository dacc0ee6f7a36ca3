"""Who may call the HTTP API: bearer tokens, browser sessions, scopes and CSRF.

`TokenAuthorizer.authorize(request, scope)` accepts a request in one of two ways:

- **Bearer token**: `Authorization: Bearer bf_...`, a token made by
  `budgetflow tokens create` (see `storage.tokens`). Scripts and CI use this;
  no cookie, so no CSRF check.
- **Browser session**: `GET /login?token=bf_...` (the router of `auth_router`)
  checks the token and sets two cookies: `budgetflow_session`, a signed,
  expiring value (HttpOnly, SameSite=Strict) naming the token, and
  `budgetflow_csrf`, readable by the page's JavaScript. A `POST`, `PUT`,
  `PATCH` or `DELETE` carried by the session cookie must send that value back
  in the `X-CSRF-Token` header (double submit), else it is refused with 403.
  The token behind a session is checked on every request, so revoking it ends
  its sessions too.

Scopes are ordered `read` < `submit` < `admin`; a token holds every scope
below its own. A request without valid credentials gets 401 with
`WWW-Authenticate: Bearer` and how to get a token; one whose token lacks the
scope gets 403 naming the scope. The accepted identity is left on
`request.state.principal` (a `Principal`).

`budgetflow serve` opens the authorizer with `authorizer_for(settings)`, makes
a fresh short-lived admin token with `issue_login_token` and prints
`login_url(base_url, token)`, as Jupyter does.
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.engine import URL, Engine

from budgetflow.settings import Settings
from storage import make_engine
from storage._engine import ensure_sqlite_dir
from storage.migrate import upgrade
from storage.tokens import Scope, TokenInfo, create_token, get_token, grants, purge_expired, verify_token
from web._session import SessionCodec, SessionValue

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "LOGIN_TOKEN_KEPT",
    "LOGIN_TOKEN_TTL",
    "SESSION_COOKIE",
    "SESSION_TTL",
    "Principal",
    "TokenAuthorizer",
    "auth_router",
    "authorizer_for",
    "issue_login_token",
    "login_url",
]

SESSION_COOKIE: Final = "budgetflow_session"
"""The HttpOnly cookie holding the signed session."""
CSRF_COOKIE: Final = "budgetflow_csrf"
"""The cookie the page's JavaScript reads and sends back as `CSRF_HEADER`."""
CSRF_HEADER: Final = "X-CSRF-Token"
"""The header a state-changing request of a browser session must carry."""
SESSION_TTL: Final = timedelta(hours=12)
"""How long a browser session lasts by default (never beyond its token's expiry)."""
LOGIN_TOKEN_TTL: Final = timedelta(hours=24)
"""How long the token in `budgetflow serve`'s login URL works."""

_UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOGIN_TOKEN_NAME: Final = "login link of budgetflow serve"
LOGIN_TOKEN_KEPT: Final = timedelta(days=7)
"""Expired login links stay listed (`tokens list --all`) this long, then the next `serve` deletes them."""


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who a request was accepted for."""

    token_id: int
    """The API token's id."""
    name: str
    """The API token's name."""
    scopes: tuple[Scope, ...]
    """The scopes the token was granted."""
    via: Literal["bearer", "session"]
    """How it was presented: an `Authorization` header or a browser session."""


def _how_to_get(scope: Scope) -> str:
    return (
        f"create a token with `budgetflow tokens create --name NAME --scope {scope}` and send it as"
        " `Authorization: Bearer bf_...`, or open the login URL `budgetflow serve` prints"
    )


def _unauthorized(reason: str, scope: Scope) -> HTTPException:
    return HTTPException(
        status_code=401,
        detail=f"{reason}; {_how_to_get(scope)}",
        headers={"WWW-Authenticate": 'Bearer realm="budgetflow"'},
    )


class TokenAuthorizer:
    """Checks API tokens and browser sessions against the `api_tokens` table.

    Implements the API's `Authorizer` protocol: `await authorize(request, scope)`
    returns when the request may go on and raises `fastapi.HTTPException` (401
    or 403) when not.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        session_secret: bytes | None = None,
        session_ttl: timedelta = SESSION_TTL,
        owns_engine: bool = False,
    ) -> None:
        """Check tokens in the (migrated) database of `engine`.

        Args:
            engine: the database holding `api_tokens`.
            session_secret: key that signs session cookies (at least 16 bytes); `None`:
                a random key for this process (sessions then end when it exits, and
                processes behind one load balancer need a shared key).
            session_ttl: how long a browser session lasts.
            owns_engine: dispose of `engine` in `aclose`.
        """
        if session_ttl <= timedelta(0):
            raise ValueError(f"session_ttl must be positive, got {session_ttl}")
        self._engine = engine
        self._sessions = SessionCodec(session_secret)
        self._session_ttl = session_ttl
        self._owns_engine = owns_engine

    @property
    def engine(self) -> Engine:
        """The database the tokens live in (for `issue_login_token`)."""
        return self._engine

    async def authorize(self, request: Request, scope: Scope) -> None:
        """Accept the request for `scope`, or raise `HTTPException` 401 (who are you?) or 403 (not allowed).

        On success `request.state.principal` holds the `Principal`.
        """
        now = datetime.now(UTC)
        header = request.headers.get("authorization")
        if header is not None:
            principal = await self._bearer(header, scope, now)
        else:
            principal = await self._session(request, scope, now)
        if not grants(principal.scopes, scope):
            held = ", ".join(f"`{s}`" for s in principal.scopes)
            raise HTTPException(
                status_code=403,
                detail=f"token `{principal.name}` (id {principal.token_id}) has scope {held}; this request"
                f" needs scope `{scope}`: create a token with"
                f" `budgetflow tokens create --name NAME --scope {scope}`",
            )
        request.state.principal = principal

    async def _bearer(self, header: str, scope: Scope, now: datetime) -> Principal:
        kind, _, token = header.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise _unauthorized("the `Authorization` header must be `Bearer bf_...`", scope)
        info = await asyncio.to_thread(verify_token, self._engine, token.strip(), now=now)
        if info is None:
            raise _unauthorized("the bearer token is unknown, expired or revoked", scope)
        return _principal(info, "bearer")

    async def _session(self, request: Request, scope: Scope, now: datetime) -> Principal:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None:
            raise _unauthorized("this request needs an API token", scope)
        session = self._sessions.read(cookie, now=now)
        if session is None:
            raise _unauthorized("the browser session is invalid or has expired; log in again", scope)
        if request.method.upper() in _UNSAFE_METHODS and not self._sessions.csrf_matches(
            session, request.headers.get(CSRF_HEADER)
        ):
            raise HTTPException(
                status_code=403,
                detail=f"a `{request.method.upper()}` made with a browser session must carry the"
                f" `{CSRF_HEADER}` header equal to the `{CSRF_COOKIE}` cookie; scripts should send"
                " `Authorization: Bearer bf_...` instead",
            )
        info = await asyncio.to_thread(get_token, self._engine, session.token_id)
        if info is None or not info.active(now):
            raise _unauthorized("the token this browser session was opened with is expired or revoked", scope)
        return _principal(info, "session")

    async def open_session(self, token: str) -> tuple[str, SessionValue]:
        """Check `token` and open a browser session for it: the cookie value and what it holds.

        The session ends after `session_ttl`, or when the token expires if sooner.

        Raises:
            HTTPException: 401 when the token is unknown, expired or revoked.
        """
        now = datetime.now(UTC)
        info = await asyncio.to_thread(verify_token, self._engine, token, now=now)
        if info is None:
            raise _unauthorized("the login token is unknown, expired or revoked", "read")
        ttl = self._session_ttl
        if info.expires_at is not None:
            ttl = min(ttl, info.expires_at - now)
        return self._sessions.issue(info.token_id, now=now, ttl=ttl)

    def check_csrf(self, request: Request) -> bool:
        """Whether `request` carries a live session's CSRF token (or no live session at all)."""
        cookie = request.cookies.get(SESSION_COOKIE)
        session = None if cookie is None else self._sessions.read(cookie, now=datetime.now(UTC))
        return session is None or self._sessions.csrf_matches(session, request.headers.get(CSRF_HEADER))

    async def aclose(self) -> None:
        """Release the database connections when the authorizer opened them."""
        if self._owns_engine:
            await asyncio.to_thread(self._engine.dispose)


def _principal(info: TokenInfo, via: Literal["bearer", "session"]) -> Principal:
    return Principal(token_id=info.token_id, name=info.name, scopes=info.scopes, via=via)


def _local_path(target: str | None) -> str:
    """`target` when it is a path on this site (`/runs/abc`), else `/` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


def _set_cookies(request: Request, response: Response, value: str, session: SessionValue) -> None:
    secure = request.url.scheme == "https"
    max_age = max(int((session.expires_at - datetime.now(UTC)).total_seconds()), 0)
    response.set_cookie(
        SESSION_COOKIE, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="strict"
    )
    response.set_cookie(
        CSRF_COOKIE, session.csrf, max_age=max_age, path="/", secure=secure, httponly=False, samesite="strict"
    )


def auth_router(authorizer: TokenAuthorizer) -> APIRouter:
    """`GET /login?token=...[&next=/path]` opens a browser session; `POST /logout` ends it.

    `/login` answers with a small page that moves on to `next` (default `/`) at
    once: a page of the site itself, not a redirect, so that the SameSite=Strict
    cookie is sent on the next request even when the login link was opened from
    another site. The token leaves the address bar and is not sent as a referrer.
    """
    router = APIRouter(tags=["auth"])

    @router.get("/login", response_class=HTMLResponse, summary="Open a browser session with an API token")
    async def login(
        request: Request,
        token: str | None = None,
        next_path: Annotated[str | None, Query(alias="next")] = None,
    ) -> Response:
        if not token:
            raise _unauthorized("`/login` needs `?token=bf_...`", "read")
        value, session = await authorizer.open_session(token)
        target = html.escape(_local_path(next_path), quote=True)
        page = (
            '<!doctype html><meta charset="utf-8"><title>budgetflow: logged in</title>'
            f'<meta http-equiv="refresh" content="0;url={target}">'
            f'<p>Logged in. <a href="{target}">Continue</a>.</p>'
        )
        response = HTMLResponse(page)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        _set_cookies(request, response, value, session)
        return response

    @router.post("/logout", status_code=204, summary="End the browser session")
    async def logout(request: Request) -> Response:
        if not authorizer.check_csrf(request):
            raise HTTPException(
                status_code=403,
                detail=f"`POST /logout` with a browser session must carry the `{CSRF_HEADER}` header"
                f" equal to the `{CSRF_COOKIE}` cookie",
            )
        response = Response(status_code=204)
        secure = request.url.scheme == "https"
        for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
            response.delete_cookie(name, path="/", secure=secure, httponly=httponly, samesite="strict")
        return response

    return router


def authorizer_for(settings: Settings) -> TokenAuthorizer:
    """A `TokenAuthorizer` on `settings.database_url`, its schema brought to the newest revision.

    Blocks while it migrates (as `storage.SqlRecorder.open` does); a SQLite
    file's directory is created when missing, as for a run; the session
    secret is `settings.session_secret`, or a random one for this process.

    Raises:
        ConfigError: the database URL is invalid.
        StorageError: the database cannot be reached or migrated.
    """
    ensure_sqlite_dir(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    secret = None if settings.session_secret is None else settings.session_secret.encode("utf-8")
    return TokenAuthorizer(engine, session_secret=secret, owns_engine=True)


def issue_login_token(target: str | URL | Engine, *, ttl: timedelta = LOGIN_TOKEN_TTL) -> str:
    """A fresh `admin` token that works for `ttl`, for the login URL `budgetflow serve` prints.

    Whoever started the server owns its data, as in Jupyter; the token is
    listed by `budgetflow tokens list` and can be revoked like any other.
    """
    purge_expired(target, name=_LOGIN_TOKEN_NAME, older_than=LOGIN_TOKEN_KEPT)
    return create_token(target, name=_LOGIN_TOKEN_NAME, scopes=["admin"], expires_in=ttl).token


def login_url(base_url: str, token: str, *, next_path: str | None = None) -> str:
    """The URL that opens a browser session: `http://127.0.0.1:8000/login?token=bf_...`."""
    url = f"{base_url.rstrip('/')}/login?token={quote(token, safe='')}"
    if next_path is not None:
        url += f"&next={quote(_local_path(next_path), safe='/')}"
    return url
