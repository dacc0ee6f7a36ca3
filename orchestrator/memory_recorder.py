"""A recorder that keeps every record in memory, and the calling tree built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    RunRecord,
    SubtaskRecord,
)

__all__ = ["CallTree", "MemoryRecorder", "TreeNode"]


@dataclass(kw_only=True)
class TreeNode:
    """A node of the calling tree: an attempt, or a call under it."""

    label: str
    """What the node is (`subtask/model#sample`, or the call's kind and model)."""
    cost_usd: Decimal
    """Cost of the node and everything under it."""
    latency_s: float
    """Duration of the node."""
    status: str
    """How it ended."""
    call: CallRecord | None = None
    """The call, for call nodes."""
    attempt: AttemptRecord | None = None
    """The attempt, for attempt nodes."""
    children: list[TreeNode] = field(default_factory=list)
    """Nodes under this one, by start time."""


@dataclass(kw_only=True)
class CallTree:
    """All attempts of a run with their calls nested under them."""

    attempts: list[TreeNode]
    """One node per attempt, in start order."""

    def walk(self) -> list[tuple[int, TreeNode]]:
        """Depth-first (depth, node) pairs."""
        out: list[tuple[int, TreeNode]] = []

        def visit(node: TreeNode, depth: int) -> None:
            out.append((depth, node))
            for child in node.children:
                visit(child, depth + 1)

        for node in self.attempts:
            visit(node, 0)
        return out

    @property
    def total_cost_usd(self) -> Decimal:
        """Sum over all attempts."""
        return sum((n.cost_usd for n in self.attempts), Decimal(0))


def build_tree(attempts: list[AttemptRecord], calls: list[CallRecord]) -> CallTree:
    """Nest calls under their parents and attempts; subtotal costs upwards."""
    nodes = {
        c.call_id: TreeNode(
            label=f"{c.kind.value} {c.model or ''}".strip(),
            cost_usd=c.cost_usd,
            latency_s=c.latency_s,
            status=c.status.value,
            call=c,
        )
        for c in calls
    }
    roots_by_attempt: dict[str, list[TreeNode]] = {}
    for c in sorted(calls, key=lambda c: c.started_s):
        node = nodes[c.call_id]
        parent = nodes.get(c.parent_call_id) if c.parent_call_id else None
        if parent is not None:
            parent.children.append(node)
        elif c.attempt_id is not None:
            roots_by_attempt.setdefault(c.attempt_id, []).append(node)

    def subtotal(node: TreeNode) -> Decimal:
        node.cost_usd = node.cost_usd + sum((subtotal(ch) for ch in node.children), Decimal(0))
        return node.cost_usd

    tree: list[TreeNode] = []
    for a in sorted(attempts, key=lambda a: (a.started_s, a.subtask, a.sample)):
        children = roots_by_attempt.get(a.attempt_id, [])
        node = TreeNode(
            label=f"{a.subtask} / {a.model} #{a.batch}.{a.sample}",
            cost_usd=Decimal(0),
            latency_s=(a.ended_s or a.started_s) - a.started_s,
            status=a.status.value,
            attempt=a,
            children=children,
        )
        subtotal(node)
        tree.append(node)
    return CallTree(attempts=tree)


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
        return build_tree(list(self.attempts.values()), self.calls)
