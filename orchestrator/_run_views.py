"""Read-only views of a run's state and the summaries the executor records of it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from decimal import Decimal
from typing import Any

from orchestrator.plan import PlanState
from orchestrator.workflow import Ancestry

__all__ = ["AncestorView", "SetView", "input_sizes", "jsonable", "redacted_inputs", "state_summary"]


class AncestorView(Mapping[str, Any]):
    """Ancestors' outputs (or texts) by name, read from the run's state without copying."""

    def __init__(self, read: Callable[[str], Any], ancestry: Ancestry, subtask: str) -> None:
        self._read = read
        self._ancestry = ancestry
        self._subtask = subtask

    def __getitem__(self, key: str) -> Any:
        if not self._ancestry.is_ancestor(key, of=self._subtask):
            raise KeyError(key)
        return self._read(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ancestry.is_ancestor(key, of=self._subtask)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._ancestry.of(self._subtask)))

    def __len__(self) -> int:
        return len(self._ancestry.of(self._subtask))


class SetView(AbstractSet[str]):
    """A read-only view of a set the executor keeps (valid during the `decide` call)."""

    def __init__(self, members: set[str]) -> None:
        self._members = members

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


SUMMARY_LIMIT = 50
"""Longest list a decision record keeps (a 10,000-way fan-out is summarised, not copied)."""


def state_summary(state: PlanState) -> dict[str, Any]:
    """What a decision record keeps of the state the policy saw."""
    return {
        "ready": list(state.ready[:SUMMARY_LIMIT]),
        "ready_count": len(state.ready),
        "completed_count": len(state.completed),
        "in_flight": [
            {"subtask": f.subtask, "model": f.model, "samples": f.samples, "elapsed_s": round(f.elapsed_s, 3)}
            for f in state.in_flight[:SUMMARY_LIMIT]
        ],
        "in_flight_count": len(state.in_flight),
        "remaining_budget_usd": round(state.remaining_budget_usd, 9),
        "remaining_time_s": None if state.remaining_time_s is None else round(state.remaining_time_s, 3),
    }


def jsonable(value: Any) -> Any:
    """`value` as JSON-serialisable data (unknown objects by their `repr`)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Decimal):
        return str(value)
    return repr(value)


def redacted_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Each input's value replaced by its size in characters (of its text, or of its JSON).

    What a run records of its inputs when content recording is off: an input is often the
    very document the run is about.
    """
    return {str(name): {"redacted": True, "chars": _chars(value)} for name, value in inputs.items()}


def input_sizes(inputs: Mapping[str, Any]) -> dict[str, int]:
    """Each input's size in characters (of its text, or of its JSON): what a redacted run records."""
    return {str(name): _chars(value) for name, value in inputs.items()}


def _chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return len(repr(value))
