"""Who may call the API: the `Authorizer` protocol, the opt-out `AllowAll`, and the one dependency.

Every route but `/healthz` depends on `require(scope)`, which asks the app's
authorizer. The real authorizer (API tokens, browser sessions: `web.auth`) is
chosen by whoever builds the app; `create_app` has no default, so an open API is
always a visible decision.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from fastapi import HTTPException, Request

__all__ = ["AllowAll", "Authorizer", "Scope", "require"]

Scope = Literal["read", "submit", "admin"]
"""What a route needs: `read` (look), `submit` (start and cancel runs), `admin` (everything)."""


class Authorizer(Protocol):
    """Decides whether a request may go on.

    `authorize` returns when it may and raises `fastapi.HTTPException` when not:
    401 without (valid) credentials, 403 when they lack `scope`.
    """

    async def authorize(self, request: Request, scope: Scope) -> None:
        """Accept `request` for `scope`, or raise `HTTPException` (401 or 403)."""
        ...


class AllowAll:
    """Accepts every request: for tests and local experiments only.

    Anyone who can reach the server can then start runs that spend money; never use it
    on an address others can reach (`budgetflow serve --insecure-no-auth`).
    """

    async def authorize(self, request: Request, scope: Scope) -> None:
        """Accept."""


def require(scope: Scope) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: the app's authorizer must accept the request for `scope`."""

    async def check(request: Request) -> None:
        authorizer: Authorizer | None = getattr(request.app.state, "authorizer", None)
        if authorizer is None:  # pragma: no cover - create_app always sets one
            raise HTTPException(status_code=500, detail="the app has no authorizer")
        await authorizer.authorize(request, scope)

    check.__name__ = f"require_{scope}"
    return check
