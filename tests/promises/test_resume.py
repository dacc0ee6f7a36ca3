"""A run whose process is killed continues from its calling tree: `budgetflow runs resume`.

Real path: `budgetflow run` in its own process against the billing provider (an
OpenAI-protocol server on loopback billing with tiktoken), SIGKILLed while a call is in
flight; then `budgetflow runs resume` in another process. Completed subtasks are not run
again, the call in flight at the kill is kept at its reservation (`lost_in_crash`, at
least what the provider billed for it), every other call is paid once, the deadline stays
where it was, and every promise of the suite holds for the whole run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator import CallKind, CallStatus, Outcome
from storage import get_run, list_runs, make_engine
from storage.models import Call, SubtaskExecution
from storage.resume import resume_point
from tests.promises.billing_provider import BillingProvider
from tests.promises.invariants import check_promises
from tests.promises.test_time import _workflow_file

REPO = Path(__file__).resolve().parents[2]
_PRICE_IN, _PRICE_OUT = Decimal("0.15") / 10**6, Decimal("0.60") / 10**6


def _wait_for_a_call_in_flight(
    db: str, provider: BillingProvider, *, after_completed: int, timeout_s: float = 60
) -> str:
    """Poll the database until `after_completed` subtasks are done and a call is in flight, and the
    provider until it is answering a request (a journaled call reaches it a moment later); its run id."""
    engine = make_engine(db)
    give_up = time.monotonic() + timeout_s
    try:
        while time.monotonic() < give_up:
            try:
                with engine.connect() as connection:
                    done = connection.scalar(
                        sa.select(sa.func.count()).where(SubtaskExecution.status == "completed")
                    )
                    flying = connection.execute(
                        sa.select(Call.run_id).where(Call.status == CallStatus.IN_FLIGHT.value)
                    ).first()
                answering = flying is not None and any(e.ended is None for e in provider.log())
                if (done or 0) >= after_completed and flying is not None and answering:
                    return str(flying.run_id)
            except sa.exc.OperationalError:
                pass  # not created yet
            time.sleep(0.01)
    finally:
        engine.dispose()
    raise AssertionError("no call went in flight after the first subtasks completed")


def _cli(db: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-billing-provider"}
    return subprocess.run(
        [sys.executable, "-m", "budgetflow", "--db", db, *args], env=env, capture_output=True, timeout=120
    )


def test_a_killed_run_resumes_from_its_calling_tree_without_paying_twice(
    provider: BillingProvider, tmp_path: Path
) -> None:
    provider.configure(first_token_delay_s=0.4, reply_tokens=30, token_interval_s=0.01)
    path = _workflow_file(tmp_path, provider)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-billing-provider"}
    argv = [sys.executable, "-m", "budgetflow", "--db", db, "run", str(path), "--budget", "1"]
    argv += ["--deadline", "90", "--policy", "always_cheapest", "--no-progress"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        run_id = _wait_for_a_call_in_flight(db, provider, after_completed=2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    before = get_run(db, run_id)
    done_before = {s.subtask for s in before.subtasks if s.status.value == "completed"}
    attempts_before = {a.attempt_id: a.subtask for a in before.attempts}
    in_flight = {c.call_id: c for c in before.calls if c.status is CallStatus.IN_FLIGHT}
    assert len(done_before) >= 2 and in_flight
    assert before.run.outcome is Outcome.RUNNING  # the dead process never closed it

    refused = _cli(db, "runs", "resume", run_id, str(path), "--no-progress")  # heartbeat still fresh
    assert refused.returncode == 2 and b"is running" in refused.stderr, refused.stderr.decode()

    resumed = _cli(db, "runs", "resume", run_id[:6], str(path), "--older-than", "0.001", "--no-progress")
    assert resumed.returncode == 0, (resumed.stdout.decode(), resumed.stderr.decode())
    assert b"Traceback" not in resumed.stderr
    assert f"{len(done_before)} of 6 subtasks done".encode() in resumed.stdout

    after = get_run(db, run_id)
    run = after.run
    assert run.outcome is Outcome.COMPLETED, run.reason
    assert run.started_at == before.run.started_at  # the same run, the same clock
    # Completed subtasks were not run again: their attempts are exactly the ones before.
    for name in done_before:
        assert {a.attempt_id for a in after.attempts if a.subtask == name} == {
            i for i, s in attempts_before.items() if s == name
        }
    # The call in flight at the kill is kept at its reservation, at least what it was billed.
    lost = {c.call_id: c for c in after.calls if c.status is CallStatus.LOST_IN_CRASH}
    assert set(lost) == set(in_flight)
    log = {e.response_id: e for e in provider.log()}
    recorded_ids = {c.response_id for c in after.calls if c.response_id}
    unrecorded = [e for e in log.values() if e.response_id not in recorded_ids]
    assert len(unrecorded) == len(lost)  # the request that was in flight
    for call, entry in zip(lost.values(), unrecorded, strict=True):
        billed = entry.prompt_tokens * _PRICE_IN + entry.completion_tokens * _PRICE_OUT
        assert call.cost_usd == call.reserved_usd >= billed
    # Everything else was paid once, and the books balance over both processes.
    llm = [c for c in after.calls if c.kind is CallKind.LLM]
    assert len({c.response_id for c in llm if c.response_id}) == len(log) - len(lost)
    check_promises(
        run,
        subtasks=after.subtasks,
        attempts=after.attempts,
        calls=after.calls,
        provider_log=[e for e in log.values() if e.response_id in recorded_ids],
    )
    assert [r.run_id for r in list_runs(db)] == [run_id]


def test_a_finished_run_is_not_resumed(provider: BillingProvider, tmp_path: Path) -> None:
    provider.configure(first_token_delay_s=0.0, reply_tokens=5)
    path = _workflow_file(tmp_path, provider)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    ran = _cli(db, "run", str(path), "--budget", "1", "--policy", "always_cheapest", "--no-progress")
    assert ran.returncode == 0, ran.stderr.decode()
    run_id = list_runs(db)[0].run_id
    answer = _cli(db, "runs", "resume", run_id, str(path), "--older-than", "0.001")
    assert answer.returncode == 2
    assert b"ended `completed`" in answer.stderr and b"Traceback" not in answer.stderr
    with pytest.raises(Exception, match="ended `completed`"):
        resume_point(db, run_id, stale_after_s=0.001)
