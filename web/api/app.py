"""The HTTP API's app factory: `create_app(settings, authorizer=...)`.

Nothing is built when this module is imported. `create_app` registers the workflows
and builds the app; its lifespan opens the database (migrating it, as a run does) and
the runner, and at shutdown cancels the runs still going (each is recorded
`cancelled`) and closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from budgetflow.settings import Settings
from orchestrator.catalog import Catalog
from orchestrator.events import Observer
from storage import make_engine
from storage._engine import ensure_sqlite_dir
from storage.migrate import upgrade
from web.api._access import Authorizer
from web.api._catalog import catalog_router
from web.api._errors import install_error_handlers
from web.api._runs import runs_router
from web.api._state import ApiState
from web.api.registry import WorkflowRegistry
from web.api.runner import InProcessRunner, RunQueue
from web.dashboard import mount_dashboard
from web.metrics import BudgetflowMetrics
from web.metrics_app import metrics_app

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    authorizer: Authorizer,
    workflows: WorkflowRegistry | None = None,
    metrics_public: bool = False,
    routers: Sequence[APIRouter] = (),
    sim_time_scale: float = 1.0,
    max_concurrent_runs: int = 8,
    follow_relayed: bool | None = None,
) -> FastAPI:
    """The API app.

    Args:
        settings: database, ledger, telemetry and the workflows to register (`api_workflows`).
        authorizer: decides who may call each route (`web.auth.authorizer_for(settings)` for API
            tokens; `web.api.AllowAll` only for tests and local experiments). There is no
            default, so that an open API is always a visible decision.
        workflows: the workflows the API may run; default: the modules of `settings.api_workflows`.
        metrics_public: serve `/metrics` without credentials (for a Prometheus without a token).
        routers: more routes, mounted as they are (e.g. `web.auth.auth_router`'s login and logout).
        sim_time_scale: speed of the simulated backend's latencies (0.1: ten times faster).
        max_concurrent_runs: runs executing at once; later ones wait, `queued`.
        follow_relayed: follow the events of runs executed by other processes through Redis
            (`web.api.relay`; needs `settings.redis_url`); default: when runs go to workers.

    With `settings.workers`, runs are enqueued on DBOS for `budgetflow worker` processes
    (`web.api.durable_queue.DurableRunQueue`) instead of running in this process.

    The app's `state.workflows` holds the registered workflows.

    Raises:
        ConfigError: a workflow module cannot be registered.
    """
    registry = (
        WorkflowRegistry.from_modules(settings.api_workflows, settings) if workflows is None else workflows
    )
    metrics_registry = CollectorRegistry()
    metrics = BudgetflowMetrics(metrics_registry)

    def observers(catalog: Catalog) -> list[Observer]:
        return [metrics.observer(catalog=catalog)]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_sqlite_dir(settings.database_url)
        engine = make_engine(settings.database_url)
        relay: Any = None
        try:
            await asyncio.to_thread(upgrade, engine)
            runner: RunQueue
            if settings.workers:  # `budgetflow worker` processes execute (docs/scale-out.md)
                from web.api.durable_queue import DurableRunQueue

                runner = await DurableRunQueue.open(settings)
            else:
                runner = InProcessRunner(
                    settings,
                    observers=observers,
                    sim_time_scale=sim_time_scale,
                    max_concurrent=max_concurrent_runs,
                )
            if settings.redis_url and (settings.workers if follow_relayed is None else follow_relayed):
                from redis.asyncio import Redis

                relay = Redis.from_url(settings.redis_url)  # workers relay their runs' events there
            app.state.api = ApiState(
                settings=settings, workflows=registry, engine=engine, queue=runner, relay=relay
            )
            try:
                yield
            finally:
                await runner.aclose()
                if relay is not None:
                    await relay.aclose()
        finally:
            await asyncio.to_thread(engine.dispose)

    app = FastAPI(
        title="budgetflow",
        summary="Run multi-agent LLM workflows under a hard dollar budget and a deadline.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.authorizer = authorizer
    app.state.workflows = registry
    install_error_handlers(app)

    @app.get("/healthz", tags=["server"], summary="Liveness: answers without credentials")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(runs_router())
    app.include_router(catalog_router())
    for router in routers:
        app.include_router(router)
    mount_dashboard(app)
    served = metrics_app(metrics_registry)
    # An ASGI app at exactly `/metrics` (a `Mount` would redirect it to `/metrics/`).
    app.router.routes.append(
        Route("/metrics", served if metrics_public else _Guarded(served, authorizer), methods=["GET", "HEAD"])
    )
    return app


class _Guarded:
    """An ASGI app behind the authorizer (scope `read`): for the mounted `/metrics`."""

    def __init__(self, app: ASGIApp, authorizer: Authorizer) -> None:
        self._app = app
        self._authorizer = authorizer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self._authorizer.authorize(Request(scope, receive), "read")
            except HTTPException as exc:
                answer = JSONResponse(
                    {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
                )
                await answer(scope, receive, send)
                return
        await self._app(scope, receive, send)
