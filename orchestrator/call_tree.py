"""The calling tree of a run: attempts -> calls -> child calls, with cost and latency per node.

One builder, used for `RunResult.tree` (from memory) and by `storage.queries`
(from the database), so both show the same tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from orchestrator.records import AttemptRecord, CallRecord

__all__ = ["AttemptNode", "CallNode", "CallTree", "build_call_tree"]


@dataclass(frozen=True, kw_only=True)
class CallNode:
    """A call and the calls made inside it."""

    call: CallRecord
    """The call."""
    children: tuple[CallNode, ...]
    """Calls whose parent is this one, by start."""
    cost_usd: Decimal
    """This call's own settled cost."""
    total_cost_usd: Decimal
    """This call's cost plus all its descendants'."""
    latency_s: float
    """This call's duration."""

    @property
    def label(self) -> str:
        """`llm small`, `agent large`, ..."""
        return f"{self.call.kind.value} {self.call.model or ''}".strip()

    @property
    def status(self) -> str:
        """How the call ended."""
        return self.call.status.value


@dataclass(frozen=True, kw_only=True)
class AttemptNode:
    """An attempt and its top-level calls."""

    attempt: AttemptRecord
    """The attempt."""
    calls: tuple[CallNode, ...]
    """Calls of this attempt without a parent in it, by start."""
    cost_usd: Decimal
    """Settled cost of every call under this attempt."""
    latency_s: float | None
    """Start to end of the attempt; `None` while it runs."""

    @property
    def label(self) -> str:
        """`subtask / model #batch.sample`."""
        a = self.attempt
        return f"{a.subtask} / {a.model} #{a.batch}.{a.sample}"

    @property
    def status(self) -> str:
        """How the attempt ended."""
        return self.attempt.status.value

    @property
    def total_cost_usd(self) -> Decimal:
        """Same as `cost_usd` (for uniform walking)."""
        return self.cost_usd


@dataclass(frozen=True, kw_only=True)
class CallTree:
    """A run's calling tree."""

    run_id: str
    """Run."""
    attempts: tuple[AttemptNode, ...]
    """Attempts by start."""
    run_calls: tuple[CallNode, ...]
    """Top-level calls outside any attempt (warm-ups), by start."""
    cost_usd: Decimal
    """Settled cost of every call in the tree."""

    def walk(self) -> Iterator[tuple[int, AttemptNode | CallNode]]:
        """Depth-first `(depth, node)`: attempts at depth 0, their calls below, then run-level calls."""

        def calls(nodes: Iterable[CallNode], depth: int) -> Iterator[tuple[int, AttemptNode | CallNode]]:
            for node in nodes:
                yield depth, node
                yield from calls(node.children, depth + 1)

        for attempt in self.attempts:
            yield 0, attempt
            yield from calls(attempt.calls, 1)
        yield from calls(self.run_calls, 0)


def build_call_tree(run_id: str, attempts: Iterable[AttemptRecord], calls: Iterable[CallRecord]) -> CallTree:
    """Nest calls under their parents and attempts.

    A call whose parent is unknown is a top-level call of its attempt; calls in a
    parent cycle (corrupt data) are cut at the first one seen, so every call appears once.
    """
    attempt_list = sorted(attempts, key=lambda a: (a.started_s, a.subtask, a.sample))
    call_list = list(calls)
    by_id = {call.call_id: call for call in call_list}
    children: dict[str, list[CallRecord]] = {}
    roots: list[CallRecord] = []
    for call in call_list:
        parent = call.parent_call_id
        if parent is not None and parent in by_id and parent != call.call_id:
            children.setdefault(parent, []).append(call)
        else:
            roots.append(call)
    placed: set[str] = set()

    def node(call: CallRecord) -> CallNode:
        placed.add(call.call_id)
        kids = tuple(
            _by_start(node(child) for child in children.get(call.call_id, []) if child.call_id not in placed)
        )
        return CallNode(
            call=call,
            children=kids,
            cost_usd=call.cost_usd,
            total_cost_usd=call.cost_usd + _total(kids),
            latency_s=call.latency_s,
        )

    top = [node(call) for call in roots]
    for call in call_list:
        if call.call_id not in placed:
            top.append(node(call))
    attempt_ids = {a.attempt_id for a in attempt_list}
    per_attempt: dict[str, list[CallNode]] = {}
    run_calls: list[CallNode] = []
    for item in top:
        attempt_id = item.call.attempt_id
        if attempt_id is not None and attempt_id in attempt_ids:
            per_attempt.setdefault(attempt_id, []).append(item)
        else:
            run_calls.append(item)
    attempt_nodes = tuple(
        AttemptNode(
            attempt=a,
            calls=tuple(_by_start(per_attempt.get(a.attempt_id, []))),
            cost_usd=_total(per_attempt.get(a.attempt_id, [])),
            latency_s=None if a.ended_s is None else a.ended_s - a.started_s,
        )
        for a in attempt_list
    )
    return CallTree(
        run_id=run_id,
        attempts=attempt_nodes,
        run_calls=tuple(_by_start(run_calls)),
        cost_usd=sum((a.cost_usd for a in attempt_nodes), Decimal(0)) + _total(run_calls),
    )


def _by_start(nodes: Iterable[CallNode]) -> list[CallNode]:
    return sorted(nodes, key=lambda n: (n.call.started_s, n.call.call_id))


def _total(nodes: Iterable[CallNode]) -> Decimal:
    return sum((n.total_cost_usd for n in nodes), Decimal(0))
