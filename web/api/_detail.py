"""A run as `GET /runs/{id}` answers it, the calling tree rolled up run > subtask > attempt > call."""

from __future__ import annotations

from decimal import Decimal

from orchestrator.call_tree import AttemptNode, CallNode
from orchestrator.records import CallKind
from storage import RunDetail, build_call_tree
from web.api.runner import RunOrder
from web.api.schemas import (
    AttemptNodeOut,
    CallNodeOut,
    CallTreeOut,
    DecisionOut,
    RunDetailOut,
    RunOut,
    SubtaskNodeOut,
    SubtaskOut,
)

__all__ = ["detail_out", "unrecorded_out"]


def _call(node: CallNode) -> CallNodeOut:
    call = node.call
    return CallNodeOut(
        call_id=call.call_id,
        kind=call.kind.value,
        model=call.model,
        litellm_model=call.litellm_model,
        status=call.status.value,
        error=call.error,
        retry=call.retry,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cost_usd=node.cost_usd,
        total_cost_usd=node.total_cost_usd,
        started_s=call.started_s,
        latency_s=node.latency_s,
        ttft_s=call.ttft_s,
        simulated=call.simulated,
        prompt=call.prompt,
        response=call.response,
        children=[_call(child) for child in node.children],
    )


def _attempt(node: AttemptNode) -> AttemptNodeOut:
    a = node.attempt
    return AttemptNodeOut(
        attempt_id=a.attempt_id,
        model=a.model,
        batch=a.batch,
        sample=a.sample,
        status=a.status.value,
        check_passed=a.check_passed,
        check_detail=a.check_detail,
        started_s=a.started_s,
        ended_s=a.ended_s,
        cost_usd=node.cost_usd,
        latency_s=node.latency_s,
        calls=[_call(c) for c in node.calls],
    )


def detail_out(detail: RunDetail, *, live: bool) -> RunDetailOut:
    """The response for a recorded run."""
    tree = build_call_tree(detail)
    by_subtask: dict[str, list[AttemptNode]] = {}
    for node in tree.attempts:
        by_subtask.setdefault(node.attempt.subtask, []).append(node)
    subtasks = []
    for name, nodes in by_subtask.items():
        ends = [n.attempt.ended_s for n in nodes]
        start = min(n.attempt.started_s for n in nodes)
        subtasks.append(
            SubtaskNodeOut(
                subtask=name,
                cost_usd=sum((n.cost_usd for n in nodes), Decimal(0)),
                latency_s=None
                if any(e is None for e in ends)
                else max(e for e in ends if e is not None) - start,
                attempts=[_attempt(n) for n in nodes],
            )
        )
    return RunDetailOut(
        run=RunOut.model_validate(detail.run),
        calls=sum(1 for c in detail.calls if c.kind is CallKind.LLM),
        subtasks=[SubtaskOut.model_validate(s) for s in detail.subtasks],
        decisions=[
            DecisionOut.model_validate(
                {
                    "index": d.index,
                    "at_s": d.at_s,
                    "policy": d.policy,
                    "state": dict(d.state),
                    "allocation": dict(d.allocation),
                    "info": dict(d.info),
                    "decide_ms": d.decide_ms,
                }
            )
            for d in detail.decisions
        ],
        tree=CallTreeOut(
            cost_usd=tree.cost_usd,
            latency_s=detail.run.makespan_s,
            subtasks=subtasks,
            run_calls=[_call(c) for c in tree.run_calls],
        ),
        live=live,
    )


def unrecorded_out(order: RunOrder, *, error: str | None) -> RunDetailOut:
    """A run this server accepted that is not recorded yet (queued), or could not start (`error`)."""
    run = RunOut(
        run_id=order.run_id,
        workflow=order.workflow.name,
        policy=order.policy,
        outcome="queued" if error is None else "failed",
        reason=None if error is None else f"the run could not start: {error}",
        budget_usd=order.budget_usd,
        spent_usd=Decimal(0),
        overrun_usd=Decimal(0),
        deadline_s=order.deadline_s,
        seed=order.seed,
        simulated=bool(order.workflow.simulated),
        inputs=dict(order.inputs),
        started_at=None,
        ended_at=None,
        makespan_s=None,
        beliefs=None,
    )
    empty = CallTreeOut(cost_usd=Decimal(0), latency_s=None, subtasks=[], run_calls=[])
    return RunDetailOut(
        run=run, calls=0, subtasks=[], decisions=[], tree=empty, live=error is None, error=error
    )
