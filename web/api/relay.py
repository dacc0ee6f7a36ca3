"""A run's events across processes: the worker running it relays them into a Redis stream,
and the API that serves `GET /runs/{id}/events` (and the dashboard's live pages) follows it.

One stream per run (`storage.redis_keys.events_key`), capped at the newest
`DEFAULT_CAPACITY` events as the in-process buffer is, and kept for `KEEP_AFTER_END_S`
after the run finishes. Entries get Redis's own ids (`<ms>-<n>`), which are also the
server-sent events' ids: a run resumed on another worker numbers its events from 0 again,
and Redis's ids still order the whole stream. Relaying is an ordinary observer, off the
run's critical path: a slow or absent Redis never slows the run (the observer's queue
drops and counts what it cannot deliver).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from orchestrator.events import Event, RunFinished
from storage.redis_keys import events_key
from web.api._payload import event_json
from web.api.live import DEFAULT_CAPACITY

__all__ = ["KEEP_AFTER_END_S", "RelayObserver", "RelayedEvent", "follow_relay", "is_relay_id", "relayed"]

KEEP_AFTER_END_S: Final = 3600
"""How long a finished run's stream is kept for late followers."""

_ID = re.compile(r"\d{1,20}-\d{1,20}")


def is_relay_id(text: str) -> bool:
    """Whether `text` is a relayed event's id (a `Last-Event-ID` to resume after)."""
    return _ID.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class RelayedEvent:
    """One event read back from a run's stream."""

    id: str
    """Its stream id (the SSE `id`)."""
    type: str
    """Its kind (the SSE `event`)."""
    data: str
    """The event as JSON, as `event_json` wrote it."""


class RelayObserver:
    """Relays a run's events into its Redis stream (an observer of `orchestrator.events`)."""

    def __init__(self, client: Any, run_id: str, *, with_content: bool = True) -> None:
        """Relay through `client` (an async Redis client) the events of run `run_id`."""
        self._client = client
        self._key = events_key(run_id)
        self._with_content = with_content

    async def observe(self, event: Event) -> None:
        """Append `event` to the stream; after the run's end, let the stream expire."""
        fields = {"type": type(event).__name__, "data": event_json(event, with_content=self._with_content)}
        await self._client.xadd(self._key, fields, maxlen=DEFAULT_CAPACITY, approximate=True)
        if isinstance(event, RunFinished):
            await self._client.expire(self._key, KEEP_AFTER_END_S)


async def follow_relay(
    client: Any, run_id: str, *, after: str | None = None, idle_s: float = 15.0
) -> AsyncIterator[RelayedEvent | None]:
    """The run's relayed events after `after` (from the first kept one without it), as they come,
    until one is `RunFinished`; `None` after each `idle_s` without an event (time for a keep-alive
    and for the caller to check that the run is still going)."""
    key = events_key(run_id)
    last = after or "0-0"
    while True:
        answer = await client.xread({key: last}, count=500, block=max(1, int(idle_s * 1000)))
        if not answer:
            yield None
            continue
        for _, entries in answer:
            for entry_id, fields in entries:
                last = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                kind = _text(fields, "type")
                yield RelayedEvent(id=last, type=kind, data=_text(fields, "data"))
                if kind == "RunFinished":
                    return


async def relayed(client: Any, run_id: str) -> bool:
    """Whether the run's events are kept in Redis (it runs elsewhere, or ended less than
    `KEEP_AFTER_END_S` ago)."""
    return bool(await client.exists(events_key(run_id)))


def _text(fields: dict[Any, Any], name: str) -> str:
    value = fields.get(name, fields.get(name.encode(), b""))
    return value.decode() if isinstance(value, bytes) else str(value)
