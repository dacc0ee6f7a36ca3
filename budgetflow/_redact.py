"""`--no-content` for run inputs: the database keeps their size, never their text.

The executor hands the recorder the run's inputs as given (`RunRecord.inputs`),
and an input is often the very document the run is about. With content
recording off the CLI wraps the SQL recorder in `RedactInputs`, which replaces
each input value by `{"redacted": true, "chars": N}` before it is written.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    Recorder,
    RunRecord,
    SubtaskRecord,
)

__all__ = ["RedactInputs", "redacted_inputs"]


def redacted_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Each input's value replaced by its size in characters (of its text, or of its JSON)."""
    return {name: {"redacted": True, "chars": _chars(value)} for name, value in inputs.items()}


def _chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return len(repr(value))


class RedactInputs:
    """A `Recorder` that forwards everything to `inner`, run records with their inputs redacted."""

    def __init__(self, inner: Recorder) -> None:
        self._inner = inner

    def _redacted(self, run: RunRecord) -> RunRecord:
        return dataclasses.replace(run, inputs=redacted_inputs(run.inputs))

    async def run_started(self, run: RunRecord) -> None:
        """Forward, inputs redacted."""
        await self._inner.run_started(self._redacted(run))

    async def decision_made(self, decision: DecisionRecord) -> None:
        """Forward."""
        await self._inner.decision_made(decision)

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        """Forward."""
        await self._inner.attempt_started(attempt)

    async def call_finished(self, call: CallRecord) -> None:
        """Forward."""
        await self._inner.call_finished(call)

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        """Forward."""
        await self._inner.attempt_finished(attempt)

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        """Forward."""
        await self._inner.subtask_changed(subtask)

    async def run_finished(self, run: RunRecord) -> None:
        """Forward, inputs redacted."""
        await self._inner.run_finished(self._redacted(run))

    async def aclose(self) -> None:
        """Close `inner`."""
        await self._inner.aclose()
