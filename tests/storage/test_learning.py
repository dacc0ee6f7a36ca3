"""Estimates learned from recorded runs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from budgetflow import arun
from orchestrator import Catalog
from orchestrator.records import (
    AttemptRecord,
    AttemptStatus,
    CallKind,
    CallRecord,
    CallStatus,
    Outcome,
    RunRecord,
)
from storage import SqlRecorder, get_run, learn_estimates, list_runs
from tests.conftest import WorkflowFactory


async def test_learned_estimates_match_what_was_recorded(
    tmp_path: Path, sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    recorder = await SqlRecorder.open(url)
    try:
        for seed in range(6):
            await arun(
                diamond(),
                catalog=sim_catalog,
                budget_usd=1,
                deadline_s=60,
                inputs={"topic": "t"},
                policy="fixed:small:2",
                seed=seed,
                recorder=recorder,
                sim_time_scale=0.0005,
            )
    finally:
        await recorder.aclose()

    assert learn_estimates(url, "diamond") == {}, "simulated runs are not learned from by default"
    learned = learn_estimates(url, "diamond", include_simulated=True, min_samples=5)
    assert set(learned) == {("a", "small"), ("b", "small"), ("c", "small"), ("d", "small")}

    passed = failed = 0
    prompt_tokens: list[int] = []
    for summary in list_runs(url, limit=10):
        detail = get_run(url, summary.run_id)
        judged = set()
        for attempt in detail.attempts:
            if attempt.subtask == "a":
                passed += attempt.status.value in ("passed", "passed_late")
                failed += attempt.status.value == "failed"
                if attempt.status.value in ("passed", "passed_late", "failed"):
                    judged.add(attempt.attempt_id)
        prompt_tokens += [
            c.input_tokens for c in detail.calls if c.attempt_id in judged and c.kind.value == "llm"
        ]
    est = learned[("a", "small")]
    assert len(est.samples) == passed + failed
    assert est.success_prob == pytest.approx(passed / (passed + failed))
    assert est.input_tokens == round(sum(prompt_tokens) / len(prompt_tokens))
    assert all(s.output_tokens > 0 and s.latency_s > 0 for s in est.samples)
    assert learn_estimates(url, "diamond", include_simulated=True, min_samples=10_000) == {}
    sim_models = {name: spec.litellm_model for name, spec in sim_catalog.models.items()}
    assert (
        learn_estimates(url, "diamond", include_simulated=True, min_samples=5, models=sim_models) == learned
    )


async def _record_run(
    url: str, run_id: str, attempts: list[tuple[str, AttemptStatus, int]], *, simulated: bool = False
) -> None:
    """One run of workflow `w`, subtask `report` on model `small`: (litellm model, status, output tokens)."""
    recorder = await SqlRecorder.open(url)
    try:
        await recorder.run_started(
            RunRecord(
                run_id=run_id,
                workflow="w",
                policy="mcpp",
                budget_usd=Decimal(1),
                deadline_s=None,
                seed=0,
                simulated=simulated,
                started_at=datetime.now(UTC),
            )
        )
        for i, (litellm_model, status, tokens) in enumerate(attempts):
            attempt = AttemptRecord(
                attempt_id=f"{run_id}-a{i}",
                run_id=run_id,
                subtask="report",
                model="small",
                batch=i,
                sample=0,
                max_tokens=1000,
                started_s=float(i),
            )
            await recorder.attempt_started(attempt)
            await recorder.call_finished(
                CallRecord(
                    call_id=f"{run_id}-c{i}",
                    run_id=run_id,
                    attempt_id=attempt.attempt_id,
                    parent_call_id=None,
                    kind=CallKind.LLM,
                    subtask="report",
                    model="small",
                    litellm_model=litellm_model,
                    input_tokens=100,
                    output_tokens=tokens,
                    status=CallStatus.ERROR if status is AttemptStatus.ERROR else CallStatus.OK,
                )
            )
            await recorder.attempt_finished(
                AttemptRecord(**{**attempt.__dict__, "status": status, "ended_s": i + 0.5})
            )
        await recorder.run_finished(
            RunRecord(
                run_id=run_id,
                workflow="w",
                policy="mcpp",
                budget_usd=Decimal(1),
                deadline_s=None,
                seed=0,
                simulated=simulated,
                started_at=datetime.now(UTC),
                outcome=Outcome.COMPLETED,
            )
        )
    finally:
        await recorder.aclose()


async def test_infrastructure_errors_and_cancelled_attempts_are_never_failures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    mini = "openai/gpt-4o-mini"
    # a pool outage: twenty attempts that ended in provider errors with no output at all
    await _record_run(url, "outage", [(mini, AttemptStatus.ERROR, 0)] * 20)
    await _record_run(
        url,
        "normal",
        [(mini, AttemptStatus.PASSED, 800)] * 6
        + [(mini, AttemptStatus.FAILED, 700)] * 2
        + [(mini, AttemptStatus.PASSED_LATE, 900)] * 2
        + [(mini, AttemptStatus.CANCELLED, 10)] * 5,
    )
    est = learn_estimates(url, "w", models={"small": mini})[("report", "small")]
    assert len(est.samples) == 10
    assert est.success_prob == pytest.approx(0.8)
    assert min(s.output_tokens for s in est.samples) == 700


async def test_estimates_are_keyed_by_the_litellm_model_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    local, hosted = "hosted_vllm/tiny", "openai/gpt-4o-mini"
    await _record_run(url, "local", [(local, AttemptStatus.FAILED, 16)] * 10)
    await _record_run(url, "hosted", [(hosted, AttemptStatus.PASSED, 600)] * 9)
    await _record_run(url, "sim", [("budgetflow-sim/small", AttemptStatus.PASSED, 500)] * 9, simulated=True)
    as_local = learn_estimates(url, "w", models={"small": local})[("report", "small")]
    assert as_local.success_prob == 0.0 and len(as_local.samples) == 10
    as_hosted = learn_estimates(url, "w", models={"small": hosted})[("report", "small")]
    assert as_hosted.success_prob == 1.0 and len(as_hosted.samples) == 9
    # a simulated run of `small` learns from neither the local nor the hosted model
    simulated = {"small": "budgetflow-sim/small"}
    assert learn_estimates(url, "w", models=simulated) == {}
    as_sim = learn_estimates(url, "w", models=simulated, include_simulated=True)[("report", "small")]
    assert len(as_sim.samples) == 9 and {s.output_tokens for s in as_sim.samples} == {500}


async def test_the_newest_runs_are_learned_from_whatever_their_ids(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    mini = "openai/gpt-4o-mini"
    # Ids sort the other way round from time: "zz-old" ran first, "aa-new" last.
    await _record_run(url, "zz-old", [(mini, AttemptStatus.FAILED, 100)] * 10)
    await _record_run(url, "aa-new", [(mini, AttemptStatus.PASSED, 100)] * 10)
    newest = learn_estimates(url, "w", models={"small": mini}, max_samples=10)[("report", "small")]
    assert newest.success_prob == 1.0
    one_run = learn_estimates(url, "w", models={"small": mini}, max_runs=1)[("report", "small")]
    assert one_run.success_prob == 1.0 and len(one_run.samples) == 10
    both = learn_estimates(url, "w", models={"small": mini})[("report", "small")]
    assert both.success_prob == 0.5 and len(both.samples) == 20
