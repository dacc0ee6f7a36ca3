"""HTTP connections to the replicas: reused after a clean call, closed after any other.

Each call gets a litellm `AsyncHTTPHandler` of its own (over its own httpx transport,
so its own sockets), taken from a per-replica free list. A call whose stream ended
normally gives its handler back and the next call to that replica reuses the
keep-alive connection. A call that was cancelled or failed closes its handler
instead: closing the httpx client closes its sockets, so the replica's server sees the
disconnect and vLLM aborts the request. Closing litellm's stream wrapper alone leaves
that to litellm (whether its iterator closes the HTTP response), and an open
connection lets vLLM generate to `max_tokens` for nobody.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httpx

from orchestrator._litellm import litellm_module

_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=2.0)
"""An idle connection is dropped after 2 s, before uvicorn's (vLLM's server) 5 s keep-alive
timeout: reusing a connection the server is closing fails the request (`ReadError`)."""


class _Handler(Protocol):
    """The part of litellm's `AsyncHTTPHandler` used here."""

    async def close(self) -> None: ...


class ReplicaConnections:
    """Per-replica free lists of litellm HTTP handlers.

    Not thread-safe; one instance per caller, used from one event loop.
    """

    def __init__(self) -> None:
        self._free: dict[str, list[Any]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def take(self, replica: str) -> Any:
        """A handler for one call to `replica`: an idle one, or a new one."""
        free = self._free.get(replica)
        if free:
            return free.pop()
        litellm_module()  # configures litellm (offline cost map) before any submodule loads
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        return AsyncHTTPHandler(transport=httpx.AsyncHTTPTransport(limits=_LIMITS))

    def give_back(self, replica: str, handler: Any) -> None:
        """Keep `handler` for the next call to `replica` (its stream ended normally)."""
        self._free.setdefault(replica, []).append(handler)

    def idle(self, replica: str) -> int:
        """Handlers kept for `replica`."""
        return len(self._free.get(replica, ()))

    async def discard(self, handler: _Handler) -> None:
        """Close `handler` and its sockets; the close completes even if the caller is cancelled.

        The close runs as a task of its own: a second cancellation of the caller stops
        the wait, not the close (`aclose` waits for closes still running).
        """
        task = asyncio.ensure_future(handler.close())
        self._closing.add(task)
        task.add_done_callback(self._closed)
        await asyncio.shield(task)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed close of a dropped connection is not news

    async def aclose(self) -> None:
        """Close every idle handler and wait for closes still running."""
        handlers = [h for free in self._free.values() for h in free]
        self._free.clear()
        for handler in handlers:
            await handler.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
