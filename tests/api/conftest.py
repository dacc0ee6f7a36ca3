"""Fixtures of the API tests: an app on a temporary SQLite database running the test workflows,
reached over ASGI (with its lifespan) or through a real uvicorn server on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from budgetflow.settings import Settings
from web.api import AllowAll, Authorizer, WorkflowRegistry, create_app

WORKFLOW_MODULES = ("tests.api.quick_workflow", "tests.api.slow_workflow")
"""The workflows the test apps register, by module path."""
TIME_SCALE = 0.01
"""Simulated latencies a hundred times faster: a quick run ends in about a second."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh SQLite file, registering the test workflows, no API keys."""
    return Settings(database_url=f"sqlite:///{tmp_path / 'runs.db'}", api_workflows=WORKFLOW_MODULES)


def make_app(
    settings: Settings, authorizer: Authorizer | None = None, *, metrics_public: bool = False
) -> FastAPI:
    """The API app for `settings`, open to all unless another authorizer is given."""
    return create_app(
        settings,
        authorizer=AllowAll() if authorizer is None else authorizer,
        workflows=WorkflowRegistry.from_modules(settings.api_workflows, settings),
        sim_time_scale=TIME_SCALE,
        metrics_public=metrics_public,
    )


@contextlib.asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to `app` in process, its lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an open app."""
    async with asgi_client(make_app(settings)) as made:
        yield made


@contextlib.contextmanager
def real_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port, on a thread of its own; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="none", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The base URL of an open app on a real server."""
    with real_server(make_app(settings)) as url:
        yield url
