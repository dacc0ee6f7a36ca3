"""SIGINT and SIGTERM during a run: cancel it, let it record itself as cancelled, exit cleanly.

The first signal cancels the task running the workflow; the executor then
cancels the calls in flight, settles them and records the run as `cancelled`,
and the CLI prints the summary and exits with 128 + the signal number (130
for Ctrl-C, 143 for SIGTERM). A second signal quits at once: the run is then
left `running` in the database and shows as `abandoned` once its heartbeat is
stale (`budgetflow runs mark-abandoned` closes it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["SIGNALS", "Interruptible", "exit_code", "run_interruptible"]

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a run cleanly."""


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number."""
    return 128 + signum


@dataclass(frozen=True, kw_only=True)
class Interruptible(Generic[T]):
    """What `run_interruptible` ended with."""

    value: T | None
    """The coroutine's result, `None` when a signal cancelled it."""
    signum: int | None
    """The signal that stopped it, if one did."""


def run_interruptible(
    coro: Coroutine[Any, Any, T], *, on_signal: Callable[[int], None] | None = None
) -> Interruptible[T]:
    """Run `coro` in a new event loop; SIGINT or SIGTERM cancels it instead of killing the process.

    Signal handlers are installed only on the main thread (elsewhere the process's
    own handling stays as it is). `on_signal` is called with the first signal, before
    the cancellation is delivered (e.g. to say that the run is being stopped).
    """
    return asyncio.run(_interruptible(coro, on_signal))


async def _interruptible(
    coro: Coroutine[Any, Any, T], on_signal: Callable[[int], None] | None
) -> Interruptible[T]:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    received: list[int] = []

    def handle(signum: int) -> None:
        if received:
            os._exit(exit_code(signum))  # a second signal: the user wants out now
        received.append(signum)
        if on_signal is not None:
            on_signal(signum)
        task.cancel()

    installed: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            loop.add_signal_handler(sig, handle, sig)
            installed.append(sig)
    try:
        try:
            value = await task
        except asyncio.CancelledError:
            if not received:
                raise
            return Interruptible(value=None, signum=received[0])
        return Interruptible(value=value, signum=received[0] if received else None)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
