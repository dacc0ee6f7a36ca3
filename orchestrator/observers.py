"""Delivering a run's events to its observers without ever slowing the run.

Each observer gets a bounded queue and a task of its own. Publishing an event is
`put_nowait` on every queue: it never waits. A queue that is full (an observer
slower than the run) drops the event for that observer alone; an observer that
raises loses that one event. Both are counted (`ObserverStats`) and logged once
per observer, and neither reaches the run. When the run ends, what is queued is
delivered for at most `drain_s`; an observer still busy after that is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.events import Event, Observer

__all__ = ["DEFAULT_QUEUE_SIZE", "ObserverHub", "ObserverStats"]

_log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 10_000
"""Events an observer may fall behind by before it loses some (a run of 1,000 attempts emits
about 5,000)."""
_DRAIN_S = 2.0


@dataclass(frozen=True, kw_only=True)
class ObserverStats:
    """What one observer received of a run."""

    observer: str
    """Its class name."""
    delivered: int
    """Events it handled."""
    dropped: int
    """Events it lost because its queue was full."""
    errors: int
    """Events on which it raised."""


class _Channel:
    def __init__(self, observer: Observer, size: int) -> None:
        self.observer = observer
        self.name = type(observer).__name__
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self.busy = False

    async def pump(self) -> None:
        while True:
            event = await self.queue.get()
            self.busy = True
            try:
                await self.observer.observe(event)
                self.delivered += 1
            except Exception:
                self.errors += 1
                if self.errors == 1:
                    _log.warning(
                        "observer %s failed on %s; it keeps receiving events",
                        self.name,
                        type(event).__name__,
                        exc_info=True,
                    )
            finally:
                self.busy = False
                self.queue.task_done()


class ObserverHub:
    """Every event to every observer, each from its own bounded queue on its own task."""

    def __init__(self, observers: Sequence[Observer], *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        """Args:
        observers: who watches.
        queue_size: events one observer may fall behind by before it loses some.
        """
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self._channels = [_Channel(o, queue_size) for o in observers]

    def __bool__(self) -> bool:
        return bool(self._channels)

    def publish(self, event: Event) -> None:
        """Queue `event` for every observer; never waits."""
        for channel in self._channels:
            if channel.task is None:
                channel.task = asyncio.get_running_loop().create_task(
                    channel.pump(), name=f"budgetflow-observer-{channel.name}"
                )
            try:
                channel.queue.put_nowait(event)
            except asyncio.QueueFull:
                channel.dropped += 1
                if channel.dropped == 1:
                    _log.warning(
                        "observer %s is %d events behind; dropping events for it",
                        channel.name,
                        channel.queue.maxsize,
                    )

    async def aclose(self, *, drain_s: float = _DRAIN_S) -> None:
        """Deliver what is queued (for at most `drain_s` in all), then stop every observer's task."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + drain_s
        for channel in self._channels:
            if channel.task is None:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.queue.join(), max(0.0, give_up - loop.time()))
            interrupted = channel.busy  # the event it is handling now is lost too
            channel.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await channel.task
            left = channel.queue.qsize() + (1 if interrupted else 0)
            if left:
                channel.dropped += left
                _log.warning("observer %s was stopped with %d events undelivered", channel.name, left)

    def stats(self) -> tuple[ObserverStats, ...]:
        """Per observer, what it received."""
        return tuple(
            ObserverStats(observer=c.name, delivered=c.delivered, dropped=c.dropped, errors=c.errors)
            for c in self._channels
        )
