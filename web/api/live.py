"""A run's events held in memory for the clients following it: a bounded buffer per run.

An in-process run publishes its events here through `LiveEventsObserver` (an ordinary
observer of `orchestrator.events`: off the run's critical path, so a slow client never
slows the run). Each client follows the buffer from where it is (`follow(after=seq)`,
the `Last-Event-ID` of a reconnecting browser), waits for new events, and stops when
the run has ended and it has read everything. The buffer keeps the newest `capacity`
events; a client further behind than that skips to the oldest kept one.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from orchestrator.events import Event, LedgerView, RunFinished
from web.api._payload import event_json

__all__ = ["DEFAULT_CAPACITY", "LiveEvent", "LiveEvents", "LiveEventsObserver"]

DEFAULT_CAPACITY: Final = 10_000
"""Events a run's buffer keeps."""


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One event, ready to send."""

    seq: int
    """Its place in the run's stream (the SSE `id`)."""
    type: str
    """Its kind (the SSE `event`): `RunStarted`, `CallFinished`, ..."""
    data: str
    """The event as JSON."""


class LiveEvents:
    """The events of one run, for any number of followers."""

    def __init__(self, run_id: str, *, capacity: int = DEFAULT_CAPACITY, with_content: bool = True) -> None:
        """A buffer for run `run_id` keeping its newest `capacity` events.

        Args:
            run_id: the run.
            capacity: events kept.
            with_content: keep subtask outputs in the events (content recording on).
        """
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.run_id = run_id
        self._capacity = capacity
        self._with_content = with_content
        self._items: list[LiveEvent] = []
        self._seqs: list[int] = []
        self._changed = asyncio.Event()
        self._closed = False
        self.finished = False
        """Whether the run's `RunFinished` was published."""
        self.latest: tuple[float, LedgerView] | None = None
        """Run time and money of the newest event (holds of calls in flight included)."""

    @property
    def closed(self) -> bool:
        """Whether the run is over: no event will follow."""
        return self._closed

    def publish(self, event: Event) -> None:
        """Add `event` and wake the followers."""
        if self._closed:
            return
        self._items.append(
            LiveEvent(event.seq, type(event).__name__, event_json(event, with_content=self._with_content))
        )
        self._seqs.append(event.seq)
        self.latest = (event.at_s, event.ledger)
        if len(self._items) >= 2 * self._capacity:  # trim in chunks: amortised O(1) per event
            del self._items[: -self._capacity]
            del self._seqs[: -self._capacity]
        if isinstance(event, RunFinished):
            self.finished = True
        self._wake()

    def close(self) -> None:
        """The run is over; followers stop once they have read everything."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(
        self, after: int | None = None, *, idle_s: float | None = None
    ) -> AsyncIterator[LiveEvent | None]:
        """Every event with a `seq` above `after` (all without it), as they come, until the run is over.

        With `idle_s`, yields `None` after each `idle_s` seconds without an event (time for a keep-alive).
        """
        last = -1 if after is None else after
        while True:
            changed = self._changed
            start = bisect.bisect_right(self._seqs, last)
            batch = self._items[start:]
            for item in batch:
                yield item
                last = item.seq
            if batch:
                continue  # more may have come while the consumer read
            if self._closed:
                return
            try:
                await asyncio.wait_for(changed.wait(), idle_s)
            except TimeoutError:
                yield None


class LiveEventsObserver:
    """Publishes a run's events into its `LiveEvents`."""

    def __init__(self, events: LiveEvents) -> None:
        """Publish into `events`."""
        self._events = events

    async def observe(self, event: Event) -> None:
        """Publish `event`."""
        self._events.publish(event)
