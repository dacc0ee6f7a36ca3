"""Hand-written calling trees, recorded through the `SqlRecorder` as a run would record them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from orchestrator.records import (
    AttemptRecord,
    AttemptStatus,
    CallKind,
    CallRecord,
    CallStatus,
    Outcome,
    RunRecord,
    SubtaskRecord,
    SubtaskStatus,
)
from storage import SqlRecorder

MINI = "openai/gpt-4o-mini"
CALL_COST = Decimal("0.000125")
PROMPT_TOKENS = 120


@dataclass(frozen=True, kw_only=True)
class Tried:
    """One attempt to record: how it ended and its model calls' statuses."""

    status: AttemptStatus
    started_s: float = 0.0
    ended_s: float | None = 1.0
    calls: Sequence[CallStatus] = (CallStatus.OK,)
    subtask: str = "report"
    model: str = "small"
    batch: int = 0
    sample: int = 0
    output_tokens: int = 100
    finish_reason: str = "stop"
    detail: str | None = None


async def record_run(
    url: str,
    run_id: str,
    tried: Sequence[Tried],
    *,
    workflow: str = "w",
    simulated: bool = False,
    started_at: datetime | None = None,
    inputs: Mapping[str, Any] | None = None,
    completed: Mapping[str, tuple[float, Any]] | None = None,
    record_content: bool = True,
) -> None:
    """Record one run: its attempts with their calls, and `completed` subtasks (name -> (end, output))."""
    run = RunRecord(
        run_id=run_id,
        workflow=workflow,
        policy="mcpp",
        budget_usd=Decimal(1),
        deadline_s=None,
        seed=0,
        simulated=simulated,
        started_at=started_at or datetime.now(UTC),
        inputs=dict(inputs or {"issue": "it crashes"}),
    )
    recorder = await SqlRecorder.open(url, record_content=record_content)
    try:
        await recorder.run_started(run)
        for i, t in enumerate(tried):
            attempt = AttemptRecord(
                attempt_id=f"{run_id}-a{i}",
                run_id=run_id,
                subtask=t.subtask,
                model=t.model,
                batch=t.batch,
                sample=t.sample,
                max_tokens=1000,
                started_s=t.started_s,
            )
            await recorder.attempt_started(attempt)
            for j, status in enumerate(t.calls):
                call = CallRecord(
                    call_id=f"{run_id}-a{i}-c{j}",
                    run_id=run_id,
                    attempt_id=attempt.attempt_id,
                    parent_call_id=None,
                    kind=CallKind.LLM,
                    subtask=t.subtask,
                    model=t.model,
                    litellm_model=MINI,
                    input_tokens=PROMPT_TOKENS + j,
                    output_tokens=t.output_tokens,
                    cost_usd=CALL_COST,
                    started_s=t.started_s + 0.1 * j,
                    latency_s=0.5,
                    ttft_s=0.2 + j,
                    status=status,
                    finish_reason=t.finish_reason,
                    simulated=simulated,
                    prompt=f"prompt {j} of {attempt.attempt_id}",
                )
                if status is CallStatus.IN_FLIGHT:
                    await recorder.call_started(call)
                else:
                    await recorder.call_finished(call)
            if t.status is not AttemptStatus.RUNNING:
                await recorder.attempt_finished(
                    replace(attempt, status=t.status, ended_s=t.ended_s, check_detail=t.detail)
                )
        for name, (ended, output) in (completed or {}).items():
            await recorder.subtask_changed(
                SubtaskRecord(
                    run_id=run_id,
                    subtask=name,
                    status=SubtaskStatus.COMPLETED,
                    attempts=1,
                    output=output,
                    started_s=0.0,
                    ended_s=ended,
                )
            )
        await recorder.run_finished(replace(run, outcome=Outcome.COMPLETED))
    finally:
        await recorder.aclose()
