"""Training examples from recorded calling trees: outcomes, features, censoring, filters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from budgetflow import arun
from orchestrator import Catalog
from orchestrator.errors import ConfigError
from orchestrator.records import AttemptStatus, CallKind, CallStatus
from storage import AttemptOutcome, SqlRecorder, extract_examples, get_run, list_runs
from tests.conftest import WorkflowFactory, estimate
from tests.learning.records import CALL_COST, MINI, PROMPT_TOKENS, Tried, record_run


class LengthEmbedder:
    """Embeds a text as (its length, 1.0): enough to see which prompt was embedded."""

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [[float(len(text)), 1.0] for text in texts]


async def test_examples_of_runs_recorded_by_arun(
    db_url: str, sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    recorder = await SqlRecorder.open(db_url)
    try:
        for seed in range(3):
            await arun(
                diamond(small=estimate(0.5, latency=3.0, spread=1.0)),
                catalog=sim_catalog,
                budget_usd=1,
                deadline_s=60,
                inputs={"topic": "a topic of 23 characters"[:23]},
                policy="fixed:small:3",
                seed=seed,
                recorder=recorder,
                sim_time_scale=0.002,
            )
    finally:
        await recorder.aclose()

    assert extract_examples(db_url) == [], "simulated runs are left out unless asked for"
    embedder = LengthEmbedder()
    examples = extract_examples(db_url, workflow=diamond(), only_simulated=True, embedder=embedder)
    assert embedder.calls == 1, "one embedder call per batch of runs"
    runs = list_runs(db_url, limit=10)
    assert [e.run_id for e in examples[:1]] == [runs[0].run_id], "newest run first"
    by_id = {e.attempt_id: e for e in examples}
    seen = set()
    total = 0
    for summary in runs:
        detail = get_run(db_url, summary.run_id)
        outputs = {s.subtask: s.output for s in detail.subtasks}
        total += len(detail.attempts)
        for attempt in detail.attempts:
            example = by_id[attempt.attempt_id]
            seen.add(example.outcome)
            calls = sorted(
                (c for c in detail.calls if c.attempt_id == attempt.attempt_id), key=lambda c: c.started_s
            )
            llm = [c for c in calls if c.kind is CallKind.LLM]
            assert example.workflow == "diamond" and example.simulated and example.model == "small"
            assert example.litellm_model == "budgetflow-sim/small"
            assert example.input_chars == {"topic": 23}
            assert example.prompt_tokens == llm[0].input_tokens
            assert example.ttft_s == llm[0].ttft_s
            assert example.output_tokens == sum(c.output_tokens for c in llm)
            assert example.cost_usd == sum((c.cost_usd for c in calls), Decimal(0))
            assert example.embedding == (float(len(llm[0].prompt or "")), 1.0)
            assert attempt.ended_s is not None
            assert example.latency_s == pytest.approx(attempt.ended_s - attempt.started_s)
            status = attempt.status
            expected = {
                AttemptStatus.PASSED: AttemptOutcome.PASSED,
                AttemptStatus.PASSED_LATE: AttemptOutcome.PASSED,
                AttemptStatus.FAILED: AttemptOutcome.FAILED_CHECK,
                AttemptStatus.CANCELLED: AttemptOutcome.CANCELLED,
            }[status]
            assert example.outcome is expected
            assert example.censored == (status is AttemptStatus.CANCELLED)
            assert example.winner == (status is AttemptStatus.PASSED)
            parents = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}[attempt.subtask]
            assert (
                example.declared_fields
                == {"a": ("topic",), "b": ("a",), "c": ("a",), "d": ("b", "c")}[attempt.subtask]
            )
            assert example.parent_output_chars == {p: len(outputs[p]) for p in parents}
    assert len(examples) == len(by_id) == total
    assert AttemptOutcome.CANCELLED in seen, "three racing samples: the winner cancels its siblings"
    assert {AttemptOutcome.PASSED, AttemptOutcome.FAILED_CHECK} <= seen

    # Without the workflow the parents are the subtasks completed when the attempt started.
    for example in extract_examples(db_url, workflow="diamond", only_simulated=True):
        assert example.declared_fields is None
        if example.subtask == "a":
            assert example.parent_output_chars == {}
        if example.subtask == "d":
            assert set(example.parent_output_chars) == {"a", "b", "c"}


async def test_outcomes_errors_and_lost_attempts(db_url: str) -> None:
    await record_run(
        db_url,
        "r1",
        [
            Tried(status=AttemptStatus.PASSED, ended_s=4.0, calls=(CallStatus.ERROR, CallStatus.OK)),
            Tried(status=AttemptStatus.FAILED, started_s=1.0, ended_s=3.0, finish_reason="length"),
            Tried(
                status=AttemptStatus.ERROR,
                started_s=1.5,
                ended_s=2.0,
                calls=(CallStatus.ERROR,),
                detail="429",
            ),
            Tried(status=AttemptStatus.CANCELLED, started_s=2.0, ended_s=4.0, calls=(CallStatus.CANCELLED,)),
            Tried(status=AttemptStatus.FAILED, started_s=2.5, ended_s=5.0, calls=(CallStatus.LOST_IN_CRASH,)),
            Tried(status=AttemptStatus.RUNNING, started_s=3.0, ended_s=None, calls=(CallStatus.IN_FLIGHT,)),
            Tried(status=AttemptStatus.ERROR, started_s=3.5, ended_s=3.6, calls=(), detail="agent raised"),
        ],
        inputs={"issue": "x" * 40, "redacted": {"redacted": True, "chars": 7}},
        completed={"plan": (0.5, "a plan of 16 chr"), "later": (3.2, {"k": 1})},
    )
    examples = extract_examples(db_url)
    assert [e.outcome for e in examples] == [
        AttemptOutcome.PASSED,
        AttemptOutcome.FAILED_CHECK,
        AttemptOutcome.PROVIDER_ERROR,
        AttemptOutcome.CANCELLED,
        AttemptOutcome.LOST,
        AttemptOutcome.LOST,
        AttemptOutcome.PROVIDER_ERROR,
    ]
    passed, failed, error, cancelled, crashed, in_flight, no_call = examples
    # Only verdicts say anything about ability: errors, cancellations and lost attempts have none.
    assert [e.success for e in examples] == [True, False, None, None, None, None, None]
    # Latency: verdicts are complete observations, cancellations censored ones, the rest none.
    assert [e.latency_observed for e in examples] == [True, True, False, True, False, False, False]
    assert cancelled.censored and cancelled.latency_s == pytest.approx(2.0)
    assert not any(e.censored for e in examples if e is not cancelled)
    assert crashed.latency_s is None and in_flight.latency_s is None
    assert error.error == "429" and no_call.error == "agent raised" and passed.error is None
    assert no_call.litellm_model is None and no_call.prompt_tokens is None and no_call.cost_usd == 0
    # The first call's prompt and ttft, every call's tokens and cost.
    assert passed.prompt_tokens == PROMPT_TOKENS and passed.ttft_s == pytest.approx(0.2)
    assert passed.output_tokens == 200 and passed.cost_usd == 2 * CALL_COST
    assert passed.litellm_model == MINI and passed.latency_s == pytest.approx(4.0)
    assert failed.truncated and not passed.truncated
    assert passed.input_chars == {"issue": 40, "redacted": 7}
    assert passed.parent_output_chars == {}, "nothing had completed when it started"
    assert error.parent_output_chars == {"plan": 16}
    assert no_call.parent_output_chars == {"plan": 16, "later": len('{"k": 1}')}


async def test_content_off_leaves_output_sizes_unknown(db_url: str) -> None:
    await record_run(
        db_url,
        "quiet",
        [Tried(status=AttemptStatus.PASSED, started_s=2.0, ended_s=3.0)],
        completed={"plan": (1.0, "the plan")},
        record_content=False,
    )
    (example,) = extract_examples(db_url, embedder=LengthEmbedder())
    assert example.parent_output_chars == {"plan": None}
    assert example.embedding is None, "no prompt recorded, nothing to embed"


async def test_simulated_and_real_runs_never_mix_unless_asked(db_url: str) -> None:
    now = datetime.now(UTC)
    await record_run(
        db_url, "real-old", [Tried(status=AttemptStatus.FAILED)], started_at=now - timedelta(days=3)
    )
    await record_run(
        db_url, "real-new", [Tried(status=AttemptStatus.PASSED)], started_at=now - timedelta(hours=1)
    )
    await record_run(db_url, "sim", [Tried(status=AttemptStatus.PASSED)], simulated=True, started_at=now)
    await record_run(db_url, "other", [Tried(status=AttemptStatus.PASSED)], workflow="other", started_at=now)

    def runs(**kwargs: object) -> list[str]:
        return [e.run_id for e in extract_examples(db_url, **kwargs)]  # type: ignore[arg-type]

    assert runs(workflow="w") == ["real-new", "real-old"]
    assert runs(workflow="w", include_simulated=True) == ["sim", "real-new", "real-old"]
    assert runs(workflow="w", only_simulated=True) == ["sim"]
    assert runs() == ["other", "real-new", "real-old"]
    assert runs(workflow="w", since=now - timedelta(days=1)) == ["real-new"]
    assert runs(workflow="w", until=now - timedelta(days=1)) == ["real-old"]
    assert runs(workflow="w", max_runs=1) == ["real-new"]
    assert runs(workflow="w", since=(now - timedelta(days=1)).replace(tzinfo=None)) == ["real-new"]
    with pytest.raises(ConfigError, match="contradict"):
        extract_examples(db_url, include_simulated=True, only_simulated=True)
