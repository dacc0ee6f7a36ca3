"""Runs submitted through the API and executed by `budgetflow worker` processes on DBOS: executed once,
shared between workers, cancelled across processes, continued by another worker when theirs dies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from budgetflow.settings import Settings
from orchestrator.records import Outcome
from tests.workers.conftest import (
    TAKEOVER_AFTER_S,
    StartWorker,
    live_workers,
    outcome,
    recorded,
    wait_for,
    workflow_rows,
)

pytestmark = pytest.mark.workers


async def _submit(api: httpx.AsyncClient, workflow: str, **body: object) -> str:
    answer = await api.post("/runs", json={"workflow": workflow, "policy": "always_cheapest", **body})
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["run_id"]
    return run_id


async def _until(what: str, check: object, timeout_s: float = 45.0) -> None:
    assert callable(check)
    await asyncio.to_thread(wait_for, what, check, timeout_s)


async def test_a_submitted_run_is_executed_by_a_worker_process(
    settings: Settings, api: httpx.AsyncClient, start_worker: StartWorker
) -> None:
    run_id = await _submit(api, "quick", explore=True, seed=7)
    queued = (await api.get(f"/runs/{run_id}")).json()["run"]
    assert queued["outcome"] == "queued" and queued["beliefs"] is None
    start_worker()
    await _until("the run to complete", lambda: outcome(settings, run_id) is Outcome.COMPLETED)
    status, executor, dispatches = workflow_rows(settings)[run_id]
    assert status == "SUCCESS" and executor in live_workers(settings) and dispatches == 1
    detail = (await api.get(f"/runs/{run_id}")).json()
    assert detail["run"]["outcome"] == "completed"
    assert detail["run"]["beliefs"] == "priors explored (seed 7), then priors; updated in run"


async def test_two_workers_share_ten_runs_and_each_runs_once(
    settings: Settings, api: httpx.AsyncClient, start_worker: StartWorker
) -> None:
    start_worker("--concurrency", "2")
    start_worker("--concurrency", "2")
    await _until("both workers to beat", lambda: len(live_workers(settings)) == 2)
    run_ids = [await _submit(api, "quick", seed=seed) for seed in range(10)]
    await _until(
        "ten runs to complete",
        lambda: all(outcome(settings, r) is Outcome.COMPLETED for r in run_ids),
        timeout_s=55,
    )
    rows = workflow_rows(settings)
    assert all(rows[r][0] == "SUCCESS" and rows[r][2] == 1 for r in run_ids), rows  # dispatched once each
    assert {rows[r][1] for r in run_ids} == set(live_workers(settings))  # both took some
    for run_id in run_ids:
        detail = recorded(settings, run_id)
        assert detail is not None
        # One attempt started per decision made: no second execution added attempts of its own.
        assert len({a.attempt_id for a in detail.attempts}) == len(detail.attempts)
        assert sum(c.cost_usd for c in detail.calls) == detail.run.spent_usd


async def test_cancel_through_the_api_stops_the_run_on_its_worker(
    settings: Settings, api: httpx.AsyncClient, start_worker: StartWorker
) -> None:
    start_worker()
    run_id = await _submit(api, "slow", budget_usd="0.05")
    await _until("the run to start on the worker", lambda: outcome(settings, run_id) is Outcome.RUNNING)
    started = time.monotonic()
    answer = await api.post(f"/runs/{run_id}/cancel")
    assert answer.status_code == 202 and answer.json()["status"] == "cancelling", answer.text
    await _until(
        "the run to be recorded cancelled", lambda: outcome(settings, run_id) is Outcome.CANCELLED, 15
    )
    assert time.monotonic() - started < 10
    assert (await api.post(f"/runs/{run_id}/cancel")).json()["status"] == "already_finished"


async def test_a_run_whose_worker_is_killed_continues_on_another(
    settings: Settings, api: httpx.AsyncClient, start_worker: StartWorker
) -> None:
    first = start_worker(name="first")
    run_id = await _submit(api, "steps")

    def one_done() -> bool:
        detail = recorded(settings, run_id)
        return detail is not None and any(s.subtask == "one" and s.winner_attempt_id for s in detail.subtasks)

    await _until("the first step to complete on the first worker", one_done)
    start_worker(name="second")
    await _until("the second worker to beat", lambda: len(live_workers(settings)) == 2)
    before = recorded(settings, run_id)
    assert before is not None
    first.kill()
    killed = time.monotonic()
    first.wait()
    await _until(
        "another worker to take the run",
        lambda: workflow_rows(settings)[run_id][2] >= 2 and workflow_rows(settings)[run_id][0] == "PENDING",
        timeout_s=TAKEOVER_AFTER_S + 15,
    )
    took_over_s = time.monotonic() - killed
    await _until("the run to complete", lambda: outcome(settings, run_id) is Outcome.COMPLETED, 50)
    after = recorded(settings, run_id)
    assert after is not None
    # The step completed before the crash kept its attempt and was not run again.
    ones = [a for a in after.attempts if a.subtask == "one"]
    assert [a.attempt_id for a in ones] == [a.attempt_id for a in before.attempts if a.subtask == "one"]
    assert after.run.spent_usd == sum(c.cost_usd for c in after.calls)
    print(f"taken over {took_over_s:.1f} s after SIGKILL (takeover after {TAKEOVER_AFTER_S:g} s)")


async def test_a_paused_worker_whose_run_was_taken_over_writes_nothing_when_it_comes_back(
    settings: Settings, api: httpx.AsyncClient, start_worker: StartWorker, tmp_path: Path
) -> None:
    first = start_worker(name="first")
    run_id = await _submit(api, "steps")
    await _until("the run to start", lambda: outcome(settings, run_id) is Outcome.RUNNING)
    start_worker(name="second")
    await _until("the second worker to beat", lambda: len(live_workers(settings)) == 2)
    first.send_signal(__import__("signal").SIGSTOP)
    try:
        await _until(
            "another worker to take the run",
            lambda: workflow_rows(settings)[run_id][2] >= 2,
            timeout_s=TAKEOVER_AFTER_S + 15,
        )
    finally:
        first.send_signal(__import__("signal").SIGCONT)
    await _until("the run to complete", lambda: outcome(settings, run_id) is Outcome.COMPLETED, 50)
    assert first.poll() is None  # the old worker lives on, fenced
    log = tmp_path / "first.log"
    await _until(
        "the old worker to see it lost the run",
        lambda: "another worker took it over" in log.read_text(errors="replace"),
        timeout_s=15,
    )
    detail = recorded(settings, run_id)
    assert detail is not None and detail.run.outcome is Outcome.COMPLETED
    assert detail.run.spent_usd == sum(c.cost_usd for c in detail.calls)
