"""A recorder that forwards every record to several recorders, in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    Recorder,
    RunRecord,
    SubtaskRecord,
)

__all__ = ["FanoutRecorder"]


class FanoutRecorder:
    """Forwards to each recorder in turn (the durable one first, so its guarantees hold).

    Every recorder receives every record even when an earlier one fails; the first
    failure is raised after all of them were called.
    """

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders

    async def _each(self, send: Callable[[Recorder], Awaitable[None]]) -> None:
        first: Exception | None = None
        for r in self.recorders:
            try:
                await send(r)
            except Exception as error:
                first = first or error
        if first is not None:
            raise first

    async def run_started(self, run: RunRecord) -> None:
        """Forward."""
        await self._each(lambda r: r.run_started(run))

    async def decision_made(self, decision: DecisionRecord) -> None:
        """Forward."""
        await self._each(lambda r: r.decision_made(decision))

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        """Forward."""
        await self._each(lambda r: r.attempt_started(attempt))

    async def call_finished(self, call: CallRecord) -> None:
        """Forward."""
        await self._each(lambda r: r.call_finished(call))

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        """Forward."""
        await self._each(lambda r: r.attempt_finished(attempt))

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        """Forward."""
        await self._each(lambda r: r.subtask_changed(subtask))

    async def run_finished(self, run: RunRecord) -> None:
        """Forward."""
        await self._each(lambda r: r.run_finished(run))

    async def aclose(self) -> None:
        """Close each."""
        await self._each(lambda r: r.aclose())
