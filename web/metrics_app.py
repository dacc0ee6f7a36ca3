"""`/metrics` over HTTP: a small ASGI app, and a server for a process that runs workflows.

`metrics_app(registry)` answers every GET with the registry's metrics in the format the
scraper asks for (Prometheus text or OpenMetrics); the API mounts it at `/metrics`.
`MetricsServer` serves it on a host and port on the running event loop, so collecting
reads the runs' state on the thread that writes it, and it leaves the process's signal
handling alone (SIGINT and SIGTERM still stop a run cleanly).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.errors import ConfigError

__all__ = ["MetricsServer", "metrics_app"]


class _MetricsApp:
    def __init__(self, registry: CollectorRegistry, on_scrape: Callable[[], None] | None) -> None:
        self._registry = registry
        self._on_scrape = on_scrape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"use GET\n", "text/plain; charset=utf-8", [(b"allow", b"GET, HEAD")])
            return
        accept = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"accept")
        encoder, content_type = choose_encoder(accept)
        body = encoder(self._registry)
        await _respond(send, 200, b"" if scope["method"] == "HEAD" else body, content_type)
        if self._on_scrape is not None:
            self._on_scrape()


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def metrics_app(registry: CollectorRegistry, *, on_scrape: Callable[[], None] | None = None) -> ASGIApp:
    """An ASGI app answering every GET with `registry`'s metrics.

    Mount it where the metrics belong, e.g. `Route("/metrics", metrics_app(registry))`
    in a Starlette or FastAPI app.

    Args:
        registry: the metrics to serve.
        on_scrape: called after each answered GET.
    """
    return _MetricsApp(registry, on_scrape)


class MetricsServer:
    """`GET /metrics` on `host:port`, served on the running event loop while the server is open."""

    def __init__(self, registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int = 0) -> None:
        """Args:
        registry: the metrics to serve.
        host: the address to listen on (loopback by default: metrics say what runs cost).
        port: the TCP port; 0 takes a free one (see `port` once started).
        """
        self._registry = registry
        self.host = host
        """The address it listens on."""
        self.port = port
        """The port it listens on (the one chosen when 0 was given, once started)."""
        self._scrapes = 0
        self._scraped = asyncio.Event()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where Prometheus finds the metrics."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def scrapes(self) -> int:
        """GETs of `/metrics` answered so far."""
        return self._scrapes

    async def start(self) -> None:
        """Listen and serve.

        Raises:
            ConfigError: the address cannot be used (taken, not local, not allowed).
        """
        sock = _bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        app = Starlette(routes=[Route("/metrics", metrics_app(self._registry, on_scrape=self._scraped_once))])
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, log_level="warning")
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="budgetflow-metrics-server"
        )
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what stopped it
                raise ConfigError(f"the metrics server on `{self.host}:{self.port}` stopped while starting")
            await asyncio.sleep(0.01)

    async def wait_for_scrape(self, timeout_s: float) -> bool:
        """Wait until `/metrics` is answered once more; `False` if that did not happen in `timeout_s`."""
        scraped = self._scraped
        try:
            await asyncio.wait_for(scraped.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop serving (requests in progress finish first)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = None
        self._task = None

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _scraped_once(self) -> None:
        self._scrapes += 1
        # Wake whoever waits for this scrape; later waiters wait for the next one.
        self._scraped.set()
        self._scraped = asyncio.Event()


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on `host:port`, or a `ConfigError` that says what to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(
            f"metrics host `{host}` cannot be resolved ({exc.strerror}); use an address such as `127.0.0.1`"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot serve metrics on `{host}:{port}` ({exc.strerror}); choose another port with"
            " `--metrics-port` or `BUDGETFLOW_METRICS_PORT` (0 picks a free one)"
        ) from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the process that runs workflows owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
