"""Helpers for the CLI tests: consoles that capture, and runs recorded as a real run records them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.records import (
    AttemptRecord,
    AttemptStatus,
    CallKind,
    CallRecord,
    Outcome,
    RunRecord,
    SubtaskRecord,
    SubtaskStatus,
)
from storage import SqlRecorder

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def capture(width: int = 160, height: int = 50) -> tuple[Console, io.StringIO]:
    """A console writing plain text into a buffer, at a given size."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, height=height, force_terminal=False, color_system=None)
    return console, buf


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A fresh SQLite database URL."""
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def record_run(
    url: str,
    run_id: str,
    *,
    workflow: str = "w",
    outcome: Outcome = Outcome.COMPLETED,
    attempts: Sequence[AttemptStatus] = (AttemptStatus.PASSED,),
    model_calls: bool = True,
    spent: Decimal = Decimal("0.01"),
    overrun: Decimal = Decimal(0),
    budget: Decimal = Decimal("0.05"),
) -> None:
    """Record one run of subtask `report` with the given attempts, as the executor would.

    With `outcome=RUNNING` the run is left open (no `run_finished`), as a run in progress
    or one whose process died.
    """
    started = RunRecord(
        run_id=run_id,
        workflow=workflow,
        policy="mcpp",
        budget_usd=budget,
        deadline_s=60.0,
        seed=0,
        simulated=True,
        started_at=datetime.now(UTC),
        inputs={"topic": "ducks"},
    )
    recorder = await SqlRecorder.open(url)
    try:
        await recorder.run_started(started)
        await recorder.subtask_changed(
            SubtaskRecord(
                run_id=run_id, subtask="report", status=SubtaskStatus.RUNNING, attempts=len(attempts)
            )
        )
        for i, status in enumerate(attempts):
            attempt = AttemptRecord(
                attempt_id=f"{run_id}-a{i}",
                run_id=run_id,
                subtask="report",
                model="small",
                batch=0,
                sample=i,
                max_tokens=500,
                started_s=0.1 * i,
            )
            await recorder.attempt_started(attempt)
            if model_calls:
                await recorder.call_finished(
                    CallRecord(
                        call_id=f"{run_id}-c{i}",
                        run_id=run_id,
                        attempt_id=attempt.attempt_id,
                        parent_call_id=None,
                        kind=CallKind.LLM,
                        subtask="report",
                        model="small",
                        litellm_model="budgetflow-sim/small",
                        input_tokens=10,
                        output_tokens=20,
                        cost_usd=spent / len(attempts),
                        latency_s=0.5,
                    )
                )
            if status is not AttemptStatus.RUNNING:
                await recorder.attempt_finished(
                    AttemptRecord(**{**attempt.__dict__, "status": status, "ended_s": 0.1 * i + 0.5})
                )
        if outcome is not Outcome.RUNNING:
            await recorder.run_finished(
                RunRecord(
                    **{
                        **started.__dict__,
                        "outcome": outcome,
                        "spent_usd": spent,
                        "overrun_usd": overrun,
                        "makespan_s": 1.5,
                        "ended_at": datetime.now(UTC),
                    }
                )
            )
    finally:
        await recorder.aclose()
