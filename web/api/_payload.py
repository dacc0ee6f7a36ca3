"""Events and records as JSON: what a server-sent event's `data` holds.

Money stays exact (decimal strings), enums are their values, times ISO 8601; a value
JSON cannot hold (a non-finite float, an arbitrary object in an output) becomes `null`
or its text.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from orchestrator.events import Event, LedgerView, SubtaskChanged
from orchestrator.records import RunRecord

__all__ = ["event_json", "jsonable", "snapshot_json"]


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, LedgerView):
        return {
            "budget_usd": str(value.budget_usd),
            "spent_usd": str(value.spent_usd),
            "reserved_usd": str(value.reserved_usd),
            "overrun_usd": str(value.overrun_usd),
            "left_usd": str(value.left_usd),
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def event_json(event: Event, *, with_content: bool) -> str:
    """The event as one line of JSON: `type`, `run_id`, `seq`, `at_s`, `ledger` and its own fields.

    Without `with_content`, a completed subtask's `output` is left out (content recording off).
    """
    data = jsonable(event)
    if isinstance(event, SubtaskChanged) and not with_content:
        data.pop("output", None)
    return json.dumps({"type": type(event).__name__, **data}, separators=(",", ":"))


def snapshot_json(run: RunRecord) -> tuple[str, str]:
    """A recorded run as one event, its kind and JSON: `RunFinished` when it ended, else `RunSnapshot`."""
    kind = "RunSnapshot" if run.outcome.value in ("running", "abandoned") else "RunFinished"
    payload = {"type": kind, "run_id": run.run_id, "seq": None, "run": jsonable(run)}
    return kind, json.dumps(payload, separators=(",", ":"))
