"""A recorder that forwards every record to several recorders, in order."""

from __future__ import annotations

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
    """Forwards to each recorder in turn (the durable one first, so its guarantees hold)."""

    def __init__(self, *recorders: Recorder) -> None:
        self.recorders = recorders

    async def run_started(self, run: RunRecord) -> None:
        """Forward."""
        for r in self.recorders:
            await r.run_started(run)

    async def decision_made(self, decision: DecisionRecord) -> None:
        """Forward."""
        for r in self.recorders:
            await r.decision_made(decision)

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        """Forward."""
        for r in self.recorders:
            await r.attempt_started(attempt)

    async def call_finished(self, call: CallRecord) -> None:
        """Forward."""
        for r in self.recorders:
            await r.call_finished(call)

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        """Forward."""
        for r in self.recorders:
            await r.attempt_finished(attempt)

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        """Forward."""
        for r in self.recorders:
            await r.subtask_changed(subtask)

    async def run_finished(self, run: RunRecord) -> None:
        """Forward."""
        for r in self.recorders:
            await r.run_finished(run)

    async def aclose(self) -> None:
        """Close each."""
        for r in self.recorders:
            await r.aclose()
