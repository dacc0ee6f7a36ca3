"""The live view: it fits 80x24 with many subtasks, and its last frame is the run's final state."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from budgetflow.progress import ProgressView
from orchestrator.events import LedgerView, RunFinished, RunStarted, SubtaskChanged
from orchestrator.ledger import usd_to_nano
from orchestrator.plan import DagView
from orchestrator.records import Outcome, RunRecord, SubtaskRecord, SubtaskStatus
from tests.cli.conftest import capture

_DAG = DagView(subtasks=(), parents={}, models={})


def _money(spent: str = "0", reserved: str = "0") -> LedgerView:
    return LedgerView(
        budget_nano=usd_to_nano("0.05"), spent_nano=usd_to_nano(spent), reserved_nano=usd_to_nano(reserved)
    )


def _started(run: RunRecord) -> RunStarted:
    return RunStarted(run_id=run.run_id, seq=0, at_s=0.0, ledger=_money(), run=run, dag=_DAG)


def _changed(name: str, status: SubtaskStatus) -> SubtaskChanged:
    record = SubtaskRecord(run_id="0123456789ab", subtask=name, status=status)
    return SubtaskChanged(run_id="0123456789ab", seq=1, at_s=0.1, ledger=_money(), subtask=record)


def _run(workflow: str, **changes: object) -> RunRecord:
    run = RunRecord(
        run_id="0123456789ab",
        workflow=workflow,
        policy="mcpp",
        budget_usd=Decimal("0.05"),
        deadline_s=45.0,
        seed=0,
        simulated=True,
        started_at=datetime.now(UTC),
    )
    return RunRecord(**{**run.__dict__, **changes})


async def test_the_view_fits_80x24_with_22_subtasks_and_a_long_name() -> None:
    console, _ = capture(width=80, height=24)
    subtasks = [f"step_{i:02d}" for i in range(22)]
    view = ProgressView(
        console,
        subtasks=subtasks,
        budget_usd=Decimal("0.05"),
        deadline_s=45.0,
        simulated=["mini", "4o"],
        live=False,
    )
    await view.observe(_started(_run("a-very-long-workflow-name-" * 4)))
    for name in subtasks[:15]:
        await view.observe(_changed(name, SubtaskStatus.COMPLETED))
    await view.observe(_changed("step_20", SubtaskStatus.RUNNING))
    with console.capture() as frame:
        console.print(view.render())
    lines = frame.get().splitlines()
    assert len(lines) <= 23 and all(len(line) <= 80 for line in lines)
    text = frame.get()
    assert lines[0].startswith("[SIMULATED: mini, 4o] run 0123456789ab  mcpp  a-very-long")
    assert lines[0].endswith("…")
    assert "budget  spent $0.000000" in text and "time    elapsed" in text and "model calls 0" in text
    assert "step_20" in text, "running subtasks always get a row"
    assert "more" in text and "completed" in text


async def test_the_last_frame_shows_the_final_state_not_a_stale_reservation() -> None:
    console, _ = capture(width=100)
    view = ProgressView(
        console,
        subtasks=["a"],
        budget_usd=Decimal("0.05"),
        deadline_s=45.0,
        simulated=[],
        live=False,
    )
    await view.observe(_started(_run("w")))
    # the last event before the end still shows a hold
    await view.observe(
        SubtaskChanged(
            run_id="0123456789ab",
            seq=1,
            at_s=1.0,
            ledger=_money("0.01", "0.01"),
            subtask=SubtaskRecord(run_id="0123456789ab", subtask="a", status=SubtaskStatus.RUNNING),
        )
    )
    with console.capture() as before:
        console.print(view.render())
    assert "reserved $0.010000" in before.get()
    final = _run("w", outcome=Outcome.COMPLETED, spent_usd=Decimal("0.02"), makespan_s=12.5)
    await view.observe(
        RunFinished(run_id=final.run_id, seq=2, at_s=12.5, ledger=_money("0.02", "0.01"), run=final)
    )
    with console.capture() as last:
        console.print(view.render())
    text = last.get()
    assert "spent $0.020000  reserved $0.000000  left $0.030000" in text
    assert "elapsed   12.5s" in text


async def test_a_function_subtask_looks_like_a_function_until_it_calls_a_model() -> None:
    console, _ = capture(width=100)
    view = ProgressView(
        console,
        subtasks=["merge", "write"],
        budget_usd=Decimal("0.05"),
        deadline_s=None,
        simulated=[],
        live=False,
        functions=frozenset({"merge"}),
    )
    await view.observe(_started(_run("w")))
    with console.capture() as frame:
        console.print(view.render())
    rows = {line.split()[0]: line for line in frame.get().splitlines() if line.startswith(("merge", "write"))}
    assert rows["merge"].split()[2] == "function" and rows["write"].split()[2] == "-"
