"""An asyncio event loop whose clock jumps to the next timer instead of waiting.

Everything written against asyncio's clock (`asyncio.sleep`, `asyncio.timeout`,
`loop.call_at`) runs unchanged, but a run with a 90-second deadline finishes
in milliseconds, and its timeline is exactly reproducible. Real I/O still
works: the selector is polled without blocking, and virtual time only
advances when nothing is ready to run. Threads that hand results back with
`call_soon_threadsafe` are waited for in real time while they are pending,
so use this loop only with code whose work stays on the loop (the simulated
backend, in-memory ledgers and recorders).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that never blocks: a wait for `timeout` advances virtual time instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout is None or timeout <= 0:
            if not ready and timeout is None:
                # Nothing scheduled at all: block for real I/O (e.g. a thread waking the loop).
                return super().select(None)
            return ready
        self.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time, starting at 0."""

    virtual_time = True
    """Marks the clock as virtual: work that takes wall time (a policy's decision) takes none
    of it, so the executor runs it on the loop instead of a worker thread."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        """Virtual seconds since the loop was made."""
        return self._jumping.now


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a fresh `VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
