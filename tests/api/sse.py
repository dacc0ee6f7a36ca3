"""Reading a server-sent event stream in tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Message:
    """One server-sent event."""

    id: str | None
    event: str | None
    data: dict[str, Any]


async def read_messages(response: httpx.Response, *, stop_after: int | None = None) -> list[Message]:
    """The messages of `response` until it ends (or `stop_after` of them), comments and `retry` skipped."""
    messages: list[Message] = []
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                messages.append(Message(fields.get("id"), fields.get("event"), json.loads(fields["data"])))
                if stop_after is not None and len(messages) >= stop_after:
                    return messages
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    return messages
