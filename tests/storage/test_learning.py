"""Estimates learned from recorded runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import Catalog, arun
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
    for summary in list_runs(url, limit=10):
        for attempt in get_run(url, summary.run_id).attempts:
            if attempt.subtask == "a":
                passed += attempt.status.value == "passed"
                failed += attempt.status.value in ("failed", "error")
    est = learned[("a", "small")]
    assert len(est.samples) == passed + failed
    assert est.success_prob == pytest.approx(passed / (passed + failed))
    assert est.input_tokens == 200
    assert all(s.output_tokens > 0 and s.latency_s > 0 for s in est.samples)
    assert learn_estimates(url, "diamond", include_simulated=True, min_samples=10_000) == {}
