"""Delivering a run's events to its observers without ever slowing the run.

Each observer gets a bounded queue and a task of its own. Publishing an event is
an append to every queue: it never waits. A queue that is full (an observer
slower than the run) drops the event for that observer alone; an observer that
raises loses that one event. Both are counted (`ObserverStats`) and logged once
per observer, and neither reaches the run. When the run ends, what is queued is
delivered for at most `drain_s`; an observer still busy after that is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.events import EVENT_TYPES, Event, Observer

__all__ = ["DEFAULT_QUEUE_SIZE", "ObserverHub", "ObserverStats", "wanted_types"]

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


def wanted_types(observer: Observer) -> frozenset[type[Event]] | None:
    """The event classes `observer` asks for (its `event_types`), or None for all of them."""
    types = getattr(observer, "event_types", None)
    if types is None:
        return None
    wanted = frozenset(types)
    unknown = [t for t in wanted if t not in EVENT_TYPES]
    if unknown:
        raise TypeError(
            f"{type(observer).__name__}.event_types names {unknown}, which are not events;"
            f" use classes of orchestrator.events"
        )
    return wanted


class _Channel:
    """One observer's queue (a deque, bounded by the hub) and the task that empties it.

    The task wakes once for whatever was published since it last ran and hands it all
    over in order, so an event costs an append, not a wake-up of its own.
    """

    def __init__(self, observer: Observer, size: int) -> None:
        self.observer = observer
        self.name = type(observer).__name__
        self.types = wanted_types(observer)
        self.size = size
        self.pending: deque[Event] = deque()
        self.task: asyncio.Task[None] | None = None
        self.wakeup: asyncio.Future[None] | None = None
        self.closing = False
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self.busy = False

    def wake(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self.pending
        while True:
            while pending:
                event = pending.popleft()
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
            if self.closing:
                return
            self.wakeup = loop.create_future()
            await self.wakeup


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
        wanted: set[type[Event]] = set()
        for channel in self._channels:
            if channel.types is None:
                self._wanted: frozenset[type[Event]] | None = None
                break
            wanted |= channel.types
        else:
            self._wanted = frozenset(wanted)

    def __bool__(self) -> bool:
        return bool(self._channels)

    def wants(self, kind: type[Event]) -> bool:
        """Whether some observer receives events of `kind` (if none does, do not build them)."""
        return bool(self._channels) and (self._wanted is None or kind in self._wanted)

    def publish(self, event: Event) -> None:
        """Queue `event` for every observer; never waits."""
        kind = type(event)
        for channel in self._channels:
            if channel.types is not None and kind not in channel.types:
                continue
            if channel.task is None:
                channel.task = asyncio.get_running_loop().create_task(
                    channel.pump(), name=f"budgetflow-observer-{channel.name}"
                )
            if len(channel.pending) >= channel.size:
                channel.dropped += 1
                if channel.dropped == 1:
                    _log.warning(
                        "observer %s is %d events behind; dropping events for it",
                        channel.name,
                        channel.size,
                    )
                continue
            channel.pending.append(event)
            channel.wake()

    async def aclose(self, *, drain_s: float = _DRAIN_S) -> None:
        """Deliver what is queued (for at most `drain_s` in all), then stop every observer's task."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + drain_s
        for channel in self._channels:
            if channel.task is None:
                continue
            channel.closing = True
            channel.wake()
            done, _ = await asyncio.wait({channel.task}, timeout=max(0.0, give_up - loop.time()))
            if done:
                continue
            interrupted = channel.busy  # the event it is handling now is lost too
            channel.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await channel.task
            left = len(channel.pending) + (1 if interrupted else 0)
            if left:
                channel.dropped += left
                _log.warning("observer %s was stopped with %d events undelivered", channel.name, left)

    def stats(self) -> tuple[ObserverStats, ...]:
        """Per observer, what it received."""
        return tuple(
            ObserverStats(observer=c.name, delivered=c.delivered, dropped=c.dropped, errors=c.errors)
            for c in self._channels
        )
