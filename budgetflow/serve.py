"""`budgetflow serve`: the HTTP API on uvicorn, on the settings' database and workflows.

Requests are authorized by API tokens (`web.auth.authorizer_for(settings)`); the
command prints the API's URL and a login URL carrying a fresh, short-lived admin token
for the browser, as Jupyter does. With `workers` (`--workers`, `BUDGETFLOW_WORKERS`), runs
are enqueued on DBOS for `budgetflow worker` processes instead of running in this one.
Without `web.auth` (an installation without it), it
refuses to start unless `--insecure-no-auth` opens the API to anyone who can reach it,
for local experiments only. SIGINT or SIGTERM stops the server: runs still going are
cancelled and recorded `cancelled`; the exit code is then 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import importlib.util
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from rich.console import Console

from budgetflow.settings import Settings
from orchestrator.errors import ConfigError

__all__ = ["GRACEFUL_SHUTDOWN_S", "serve"]

GRACEFUL_SHUTDOWN_S = 5.0
"""How long open connections (event streams) may take to close when the server stops."""


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on `host`:`port`, or a `ConfigError` saying what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use; pick another with `--port`") from None
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}); check `--host` and `--port`"
        ) from None
    return sock


def serve(
    settings: Settings,
    out: Console,
    *,
    host: str,
    port: int,
    insecure_no_auth: bool = False,
    metrics_public: bool = False,
    time_scale: float = 1.0,
) -> int:
    """Serve the API until SIGINT or SIGTERM; return the exit code.

    Raises:
        ConfigError: no authorizer and no `--insecure-no-auth`, a port in use, a workflow
            module that cannot be registered.
    """
    import uvicorn

    from web.api import AllowAll, Authorizer, create_app

    authorizer: Authorizer
    routers: Sequence[Any] = ()
    close: Callable[[], Coroutine[Any, Any, None]] | None = None
    login: str | None = None
    sock = _listen(host, port)
    try:
        base = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"
        if insecure_no_auth:
            authorizer = AllowAll()
            out.print(
                "[bold red]--insecure-no-auth[/]: anyone who can reach this address may start runs that spend"
                " money; use it for local experiments only",
                highlight=False,
            )
        elif importlib.util.find_spec("web.auth") is None:
            raise ConfigError(
                "this installation has no token authorizer (`web.auth`), so the API cannot check who calls"
                " it; pass `--insecure-no-auth` to serve it open, for local experiments only"
            )
        else:
            auth = importlib.import_module("web.auth")
            token_authorizer = auth.authorizer_for(settings)
            authorizer, close = token_authorizer, token_authorizer.aclose
            routers = (auth.auth_router(token_authorizer),)
            login = auth.login_url(base, auth.issue_login_token(token_authorizer.engine))
        app = create_app(
            settings,
            authorizer=authorizer,
            routers=routers,
            metrics_public=metrics_public,
            sim_time_scale=time_scale,
        )
        names = ", ".join(f"`{w.name}`" for w in app.state.workflows) or "none"
        out.print(
            f"budgetflow API on {base} (OpenAPI: {base}/docs); workflows: {names}",
            highlight=False,
            soft_wrap=True,
        )
        if settings.workers:
            out.print(
                "runs are enqueued for `budgetflow worker` processes (DBOS); start at least one with the"
                " same database and workflows (docs/scale-out.md)",
                highlight=False,
                soft_wrap=True,
            )
        if not app.state.workflows:
            out.print(
                "register workflows to run with `--workflow MODULE` or `BUDGETFLOW_API_WORKFLOWS`,"
                " e.g. `examples.code_pipeline`",
                style="yellow",
                highlight=False,
            )
        if login is not None:
            out.print(
                f"open in a browser (logs you in for 24 hours): {login}", highlight=False, soft_wrap=True
            )
        config = uvicorn.Config(
            app, log_level="warning", ws="none", timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S)
        )
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn stopped cleanly, then re-raised the Ctrl-C
            out.print("stopped", style="dim")
            return 130
    finally:
        sock.close()
        if close is not None:
            with contextlib.suppress(Exception):
                asyncio.run(close())
    out.print("stopped", style="dim")
    return 0
