"""A recorder that keeps every record in memory, and the calling tree built from them."""

from __future__ import annotations

from orchestrator.call_tree import CallTree, build_call_tree
from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    RunRecord,
    SubtaskRecord,
)

__all__ = ["MemoryRecorder"]


class MemoryRecorder:
    """Keeps records in lists; the latest version of each attempt and subtask."""

    def __init__(self) -> None:
        self.run: RunRecord | None = None
        self.decisions: list[DecisionRecord] = []
        self.attempts: dict[str, AttemptRecord] = {}
        self.calls: list[CallRecord] = []
        self.subtasks: dict[str, SubtaskRecord] = {}

    async def run_started(self, run: RunRecord) -> None:
        """Keep the run."""
        self.run = run

    async def decision_made(self, decision: DecisionRecord) -> None:
        """Keep the decision."""
        self.decisions.append(decision)

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        """Keep the attempt."""
        self.attempts[attempt.attempt_id] = attempt

    async def call_started(self, call: CallRecord) -> None:
        """Nothing to keep: the call's final record follows (memory does not survive a crash)."""

    async def call_finished(self, call: CallRecord) -> None:
        """Keep the call."""
        self.calls.append(call)

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        """Replace the attempt with its final version."""
        self.attempts[attempt.attempt_id] = attempt

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        """Keep the subtask's latest state."""
        self.subtasks[subtask.subtask] = subtask

    async def run_finished(self, run: RunRecord) -> None:
        """Keep the final run."""
        self.run = run

    async def aclose(self) -> None:
        """Nothing to release."""

    def tree(self) -> CallTree:
        """The calling tree of what was recorded."""
        return build_call_tree(self.run.run_id if self.run else "", self.attempts.values(), self.calls)
