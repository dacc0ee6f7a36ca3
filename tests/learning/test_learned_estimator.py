"""The per-input learned estimator: calibration, pooled fallbacks, errors, censoring, artifacts, a run."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pytest

from budgetflow import arun
from orchestrator import Catalog
from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate
from orchestrator.estimator import RequestFeatures
from orchestrator.records import CallKind
from storage import (
    AttemptExample,
    AttemptOutcome,
    EstimatorArtifact,
    HashingEmbedder,
    LearnedEstimator,
    SqlRecorder,
    extract_examples,
    fit_estimator,
    get_run,
)
from storage.learned_estimator import EMBEDDING_COMPONENTS, MIN_MODEL_VERDICTS
from storage.pooled_estimates import pool_examples
from tests.conftest import WorkflowFactory, estimate

START = datetime(2026, 1, 1, tzinfo=UTC)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _chars(x: float) -> int:
    """The input size whose feature `log1p(chars)` is (about) `x`."""
    return round(math.expm1(x))


def _example(
    run: int,
    *,
    model: str = "small",
    subtask: str = "s",
    outcome: AttemptOutcome = AttemptOutcome.PASSED,
    chars: int | None = None,
    output_tokens: int = 200,
    latency_s: float = 3.0,
    truncated: bool = False,
    embedding: tuple[float, ...] | None = None,
    prompt_tokens: int | None = None,
) -> AttemptExample:
    return AttemptExample(
        workflow="w",
        subtask=subtask,
        model=model,
        litellm_model=None,
        run_id=f"run-{run}",
        attempt_id=f"run-{run}-{subtask}-{model}",
        batch=0,
        sample=0,
        run_started_at=START,
        simulated=False,
        input_chars={} if chars is None else {"doc": chars},
        prompt_tokens=prompt_tokens,
        embedding=embedding,
        outcome=outcome,
        censored=outcome is AttemptOutcome.CANCELLED,
        output_tokens=output_tokens,
        truncated=truncated,
        latency_s=latency_s,
    )


def _verdict(passed: bool) -> AttemptOutcome:
    return AttemptOutcome.PASSED if passed else AttemptOutcome.FAILED_CHECK


TRUE_INTERCEPT = {"small": 0.2, "large": 1.4}
TRUE_SLOPE = -1.5


def _truth(model: str, x: float) -> float:
    """The true success probability: sigmoid(a_model + b (x − 6)), `x = log1p(input chars)`."""
    return _sigmoid(TRUE_INTERCEPT[model] + TRUE_SLOPE * (x - 6))


def _known_runs(runs: int, seed: int) -> tuple[list[AttemptExample], list[tuple[float, str, bool]]]:
    """Runs of both models on inputs of random size; also (x, model, passed) of each verdict."""
    rng = np.random.default_rng(seed)
    examples, truth = [], []
    for run in range(runs):
        chars = _chars(float(rng.normal(6, 1)))
        x = math.log1p(chars)
        for model in ("small", "large"):
            passed = bool(rng.random() < _truth(model, x))
            tokens = round(math.exp(5 + 0.5 * (x - 6) + 0.3 * rng.normal()))
            examples.append(
                _example(run, model=model, outcome=_verdict(passed), chars=chars, output_tokens=tokens)
            )
            truth.append((x, model, passed))
    return examples, truth


def _auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """P(score of a pass > score of a failure), ties a half."""
    positives = np.array([s for s, y in zip(scores, labels, strict=True) if y])
    negatives = np.array([s for s, y in zip(scores, labels, strict=True) if not y])
    above = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (
        positives[:, None] == negatives[None, :]
    ).sum()
    return float(above / (len(positives) * len(negatives)))


def test_success_is_calibrated_on_a_known_distribution() -> None:
    examples, _ = _known_runs(3000, seed=1)
    artifact = fit_estimator(examples, workflow="w", seed=0)
    metrics = artifact.metrics
    assert metrics.n_holdout_runs == 600 and metrics.n_holdout == 1200, "20% of the runs, both models each"
    assert metrics.ece is not None and metrics.ece <= 0.05
    assert artifact.params.calibration is not None, "enough held-out verdicts to calibrate"

    # AUROC close to what the true probabilities achieve on fresh runs of the same distribution.
    _, fresh = _known_runs(3000, seed=2)
    truth_auroc = _auroc([_truth(m, x) for x, m, _ in fresh], [y for *_, y in fresh])
    assert metrics.auroc is not None and abs(metrics.auroc - truth_auroc) <= 0.03
    learned = LearnedEstimator(artifact)
    predicted = [
        learned.success_probability("s", m, RequestFeatures(input_chars={"doc": _chars(x)}))
        for x, m, _ in fresh
    ]
    assert all(p is not None for p in predicted)
    assert abs(_auroc([p or 0.0 for p in predicted], [y for *_, y in fresh]) - truth_auroc) <= 0.01

    # The predictions track the truth across the inputs, per model (an input harder for one is
    # still easier for the other).
    for model in ("small", "large"):
        for x in np.linspace(4.5, 7.5, 7):
            p = learned.success_probability("s", model, RequestFeatures(input_chars={"doc": _chars(x)}))
            assert p is not None and abs(p - _truth(model, math.log1p(_chars(x)))) <= 0.05, (model, x)
    # Output tokens grow with the input like the truth, exp(5 + 0.5 (x − 6)).
    for x in (5.0, 7.0):
        found = learned.estimate("w", "s", "small", RequestFeatures(input_chars={"doc": _chars(x)}))
        assert found is not None
        median = found.output_tokens.quantile(0.5)
        assert median == pytest.approx(math.exp(5 + 0.5 * (math.log1p(_chars(x)) - 6)), rel=0.08)
    assert (
        metrics.output_tokens_p90_coverage is not None
        and abs(metrics.output_tokens_p90_coverage - 0.9) <= 0.04
    )


def test_without_features_or_with_little_data_it_is_near_the_pooled_estimate() -> None:
    rng = np.random.default_rng(3)
    bare = [
        _example(run, model=m, outcome=_verdict(bool(rng.random() < 0.6)), output_tokens=100 + run)
        for run in range(4)
        for m in ("small", "large")
    ]
    few_verdicts = LearnedEstimator(fit_estimator(bare[: 2 * (MIN_MODEL_VERDICTS - 1)], workflow="w"))
    assert few_verdicts.estimate("w", "s", "small", RequestFeatures()) is None, "too few verdicts: priors"
    bare = [replace(e, attempt_id=f"{e.attempt_id}-{i}", sample=i) for e in bare for i in range(3)]
    artifact = fit_estimator(bare, workflow="w")
    assert artifact.features == () and artifact.metrics.n_holdout == 0, "4 runs: no held-out split"
    pooled = pool_examples(bare)
    learned = LearnedEstimator(artifact)
    for model in ("small", "large"):
        cell = pooled.cell("w", "s", model)
        assert cell is not None and cell.output_tokens is not None
        p = learned.success_probability("s", model, RequestFeatures())
        assert p is not None and abs(p - cell.success_prob) <= 0.08, (
            "12 verdicts, shrunk toward other centres"
        )
        found = learned.estimate("w", "s", model, RequestFeatures())
        assert found is not None
        assert found.output_tokens.mean == pytest.approx(cell.output_tokens.mean)
        assert found.output_tokens.std == pytest.approx(cell.output_tokens.std)

    # Many runs, still no feature: measured on held-out runs, uncalibrated; both models tried on
    # every input (nothing selected), so the answer is each model's pass rate.
    many = [
        _example(run, model=m, outcome=_verdict(bool(rng.random() < (0.5 if m == "small" else 0.9))))
        for run in range(200)
        for m in ("small", "large")
    ]
    measured = fit_estimator(many, workflow="w")
    assert measured.metrics.n_holdout == 80 and measured.metrics.brier is not None
    assert measured.params.calibration is None
    for model in ("small", "large"):
        verdicts = [e.outcome is AttemptOutcome.PASSED for e in many if e.model == model]
        p = LearnedEstimator(measured).success_probability("s", model, RequestFeatures())
        assert p is not None and abs(p - float(np.mean(verdicts))) <= 0.01

    # With an input feature and a handful of runs, the penalty keeps the feature from moving it.
    sized = [replace(e, input_chars={"doc": 100 * (i + 1)}) for i, e in enumerate(bare)]
    few = LearnedEstimator(fit_estimator(sized, workflow="w"))
    for model in ("small", "large"):
        without = learned.success_probability("s", model, RequestFeatures())
        assert without is not None
        for chars in (100, 800):
            p = few.success_probability("s", model, RequestFeatures(input_chars={"doc": chars}))
            assert p is not None and abs(p - without) <= 0.05

    # Cold start: nothing recorded -> no opinion (the run's priors apply); another workflow too.
    empty = LearnedEstimator(fit_estimator([], workflow="w"))
    assert empty.estimate("w", "s", "small", RequestFeatures()) is None
    assert learned.estimate("other", "s", "small", RequestFeatures()) is None


def test_held_out_verdicts_that_all_agree_do_not_make_it_certain() -> None:
    examples = [_example(run, chars=100 + run) for run in range(300)]
    artifact = fit_estimator(examples, workflow="w")
    assert artifact.params.calibration is not None and artifact.metrics.auroc is None, "passes only"
    p = LearnedEstimator(artifact).success_probability(
        "s", "small", RequestFeatures(input_chars={"doc": 150})
    )
    assert p is not None and 0.95 < p < 1 - 1 / 300, "not the certainty of 300 passes in a row"


def test_a_model_without_attempts_on_a_subtask_borrows_the_model_and_the_subtask() -> None:
    """`large` is untried on `b`: its odds there are b's (from `small`) moved by most of what
    `large` does better than `small` elsewhere (on `a`; the rest may be a's own, so not all)."""
    rng = np.random.default_rng(4)
    rates = {("a", "small"): 0.5, ("a", "large"): 0.9, ("b", "small"): 0.3}
    examples = [
        _example(run, model=m, subtask=s, outcome=_verdict(bool(rng.random() < rates[(s, m)])))
        for run in range(300)
        for s, m in rates
    ]
    learned = LearnedEstimator(fit_estimator(examples, workflow="w"))
    assert pool_examples(examples).cell("w", "b", "large") is not None
    found = learned.estimate("w", "b", "large", RequestFeatures())
    assert found is not None
    logit = {}
    for key in [*rates, ("b", "large")]:
        p = learned.success_probability(*key, RequestFeatures())
        assert p is not None
        logit[key] = math.log(p / (1 - p))
    better = logit[("a", "large")] - logit[("a", "small")]
    borrowed = logit[("b", "large")] - logit[("b", "small")]
    assert better > 1.5 and 0.6 * better < borrowed < 1.05 * better


def test_errors_are_not_failures() -> None:
    """Long inputs often end in a provider error; the check passes 80% of the verdicts everywhere."""
    rng = np.random.default_rng(5)
    examples = []
    for run in range(1500):
        x = float(rng.normal(6, 1))
        if x > 6.5 and rng.random() < 0.7:
            outcome = AttemptOutcome.PROVIDER_ERROR
        else:
            outcome = _verdict(bool(rng.random() < 0.8))
        examples.append(_example(run, outcome=outcome, chars=_chars(x)))
    long = [e for e in examples if math.log1p(e.input_chars["doc"]) > 7]
    passes = sum(1 for e in long if e.success)
    assert passes / len(long) < 0.45, "counting errors as failures would make long inputs hard"

    learned = LearnedEstimator(fit_estimator(examples, workflow="w"))
    for x in (5.0, 6.0, 7.5):
        p = learned.success_probability("s", "small", RequestFeatures(input_chars={"doc": _chars(x)}))
        assert p is not None and abs(p - 0.8) <= 0.06, x


def test_cancelled_latencies_are_censored() -> None:
    """Latency's median is 10 s · exp(0.3 (x − 6)); a sibling's win cancels the slow ones."""
    rng = np.random.default_rng(6)
    examples = []
    for run in range(1500):
        x = float(rng.normal(6, 1))
        latency = 10 * math.exp(0.3 * (x - 6) + 0.5 * rng.normal())
        cancelled_at = float(rng.uniform(3, 30))
        if latency > cancelled_at:
            examples.append(
                _example(run, outcome=AttemptOutcome.CANCELLED, chars=_chars(x), latency_s=cancelled_at)
            )
        else:
            examples.append(_example(run, outcome=_verdict(True), chars=_chars(x), latency_s=latency))
    kept = sorted(e.latency_s or 0.0 for e in examples if not e.censored)
    assert kept[len(kept) // 2] < 9, "dropping the cancelled attempts would make it look fast"

    artifact = fit_estimator(examples, workflow="w")
    learned = LearnedEstimator(artifact)
    for x in (5.0, 6.0, 7.0):
        found = learned.estimate("w", "s", "small", RequestFeatures(input_chars={"doc": _chars(x)}))
        assert found is not None
        truth = 10 * math.exp(0.3 * (math.log1p(_chars(x)) - 6))
        assert found.latency_s.quantile(0.5) == pytest.approx(truth, rel=0.08), x
        assert found.latency_s.quantile(0.9) == pytest.approx(truth * math.exp(0.5 * 1.2816), rel=0.12), x
    coverage = artifact.metrics.latency_p90_coverage
    assert coverage is not None and abs(coverage - 0.9) <= 0.05


def test_truncated_outputs_are_lower_bounds() -> None:
    rng = np.random.default_rng(7)
    examples = []
    for run in range(1000):
        tokens = round(400 * math.exp(0.4 * rng.normal()))
        cap = 450
        examples.append(
            _example(run, output_tokens=min(tokens, cap), truncated=tokens > cap, chars=100 + run % 7)
        )
    found = LearnedEstimator(fit_estimator(examples, workflow="w")).estimate(
        "w", "s", "small", RequestFeatures(input_chars={"doc": 103})
    )
    assert found is not None
    assert found.output_tokens.quantile(0.5) == pytest.approx(400, rel=0.05)
    assert found.output_tokens.quantile(0.9) > 450, "the cap is not the longest output"


def _prompted_runs(embedder: HashingEmbedder, runs: int) -> list[AttemptExample]:
    """Prompts that say how hard they are: 'urgent' ones fail more often."""
    rng = np.random.default_rng(8)
    examples = []
    for run in range(runs):
        urgent = bool(rng.random() < 0.5)
        text = f"[user]\nPlease {'urgently ' if urgent else ''}fix ticket {run}"
        vector = tuple(embedder.embed([text])[0])
        passed = bool(rng.random() < (0.3 if urgent else 0.85))
        examples.append(
            _example(
                run,
                outcome=_verdict(passed),
                chars=40 + run % 13,
                embedding=vector,
                prompt_tokens=10 + run % 5,
            )
        )
    return examples


def test_the_artifact_round_trips_through_json() -> None:
    embedder = HashingEmbedder(32)
    artifact = fit_estimator(_prompted_runs(embedder, 400), workflow="w", embedder=embedder)
    again = fit_estimator(_prompted_runs(embedder, 400), workflow="w", embedder=embedder)
    assert replace(again, created_at=artifact.created_at) == artifact, "seeded: the same fit twice"
    assert artifact.embedder == "hashing-32"
    assert artifact.features == (
        "input_chars:doc",
        "prompt_tokens",
        *(f"embedding_pc:{i}" for i in range(EMBEDDING_COMPONENTS)),
    ), "400 prompts: every principal direction kept"
    loaded = EstimatorArtifact.from_json(artifact.to_json())
    assert loaded == artifact
    before, after = LearnedEstimator(artifact), LearnedEstimator(loaded)  # the embedder rebuilt by its name
    requests = [
        RequestFeatures(),
        RequestFeatures(input_chars={"doc": 45}, prompt_tokens=12),
        RequestFeatures(
            input_chars={"doc": 45}, prompt_tokens=12, prompt_text="[user]\nPlease urgently fix it"
        ),
        RequestFeatures(prompt_text="[user]\nPlease fix ticket 3"),
    ]
    for features in requests:
        assert before.estimate("w", "s", "small", features) == after.estimate("w", "s", "small", features)
    urgent, calm = (
        before.success_probability(
            "s", "small", RequestFeatures(prompt_text=f"[user]\nPlease {w}fix ticket 9")
        )
        for w in ("urgently ", "")
    )
    assert urgent is not None and calm is not None and urgent < calm - 0.3, "the prompt's words matter"

    with pytest.raises(ConfigError, match="layout version"):
        EstimatorArtifact.from_json(artifact.to_json().replace('"format_version": 2', '"format_version": 99'))
    with pytest.raises(ConfigError, match="not an estimator artifact"):
        EstimatorArtifact.from_json("{}")


def test_an_unknown_embedder_must_be_given() -> None:
    embedder = HashingEmbedder(16)
    artifact = fit_estimator(_prompted_runs(embedder, 20), workflow="w", embedder=embedder)
    foreign = replace(artifact, embedder="sentence-model")
    with pytest.raises(ConfigError, match="pass the same embedder"):
        LearnedEstimator(foreign)
    assert (
        LearnedEstimator(foreign, embedder=embedder).estimate("w", "s", "small", RequestFeatures())
        is not None
    )


def test_the_hashing_embedder_is_deterministic() -> None:
    texts = ["Plan a fix for: it crashes", "Plan a fix for: it hangs", ""]
    first, again = HashingEmbedder(64).embed(texts), HashingEmbedder(64).embed(texts)
    assert first == again
    assert first[0] != first[1]
    assert math.isclose(sum(x * x for x in first[0]), 1.0) and set(first[2]) == {0.0}
    # the same vectors in another interpreter, whatever its string-hash seed
    code = (
        "import json; from storage import HashingEmbedder; print(json.dumps(HashingEmbedder(64).embed(%r)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code % texts],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip() == str(first).replace("'", '"')
    with pytest.raises(ConfigError):
        HashingEmbedder(0)


@dataclass
class _Spy:
    """An estimator that records what it is asked, answering with another's beliefs."""

    inner: LearnedEstimator
    asked: list[tuple[str, str, RequestFeatures, AttemptEstimate | None]]

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        found = self.inner.estimate(workflow, subtask, model, features)
        self.asked.append((subtask, model, features, found))
        return found


TOPICS = [
    "a short topic",
    "a rather longer topic about parsing",
    "caching",
    "a topic on retries and backoff",
    "logging",
    "the last topic, on timeouts",
]


async def test_recorded_runs_train_an_estimator_the_executor_feeds(
    sqlite_url: str, sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    async def run(recorder: SqlRecorder, seed: int, topic: str, estimator: _Spy | None = None) -> str:
        result = await arun(
            diamond(small=estimate(0.6, latency=3.0, spread=0.5)),
            catalog=sim_catalog,
            budget_usd=1,
            deadline_s=60,
            inputs={"topic": topic},
            policy="fixed:small:2",
            seed=seed,
            recorder=recorder,
            estimator=estimator,
            sim_time_scale=0.002,
        )
        return result.run_id

    recorder = await SqlRecorder.open(sqlite_url)
    try:
        for seed, topic in enumerate(TOPICS):
            await run(recorder, seed, topic)
    finally:
        await recorder.aclose()
    embedder = HashingEmbedder(64)
    examples = extract_examples(sqlite_url, workflow=diamond(), only_simulated=True, embedder=embedder)
    assert examples and all(e.embedding is not None for e in examples if e.prompt_tokens is not None)
    artifact = fit_estimator(examples, workflow="diamond", embedder=embedder)
    assert artifact.data.runs == len(TOPICS) and artifact.data.include_simulated
    assert artifact.embedder == "hashing-64" and "input_chars:topic" in artifact.features
    assert "embedding_pc:0" in artifact.features, "24 prompts: one principal direction"

    spy = _Spy(LearnedEstimator(EstimatorArtifact.from_json(artifact.to_json())), [])
    recorder = await SqlRecorder.open(sqlite_url)
    try:
        run_id = await run(recorder, 100, TOPICS[1], spy)
    finally:
        await recorder.aclose()
    prompted = [(s, m, f, found) for s, m, f, found in spy.asked if f.prompt_text is not None]
    assert {s for s, *_ in prompted} == {"a", "b", "c", "d"}, "each subtask's prompt, once it is ready"
    assert all((found is not None) == (m == "small") for _, m, _, found in prompted), "no data on `large`"
    assert all(f.input_chars == {"topic": len(TOPICS[1])} for _, _, f, _ in spy.asked)

    # The text the executor handed over is the recorded prompt, so its embedding is training's.
    detail = get_run(sqlite_url, run_id)
    recorded = {
        a.subtask: c.prompt
        for a in detail.attempts
        for c in detail.calls
        if c.attempt_id == a.attempt_id and c.kind is CallKind.LLM
    }
    for subtask, _, features, _ in prompted:
        assert features.prompt_text == recorded[subtask]
    planned = next(f for s, _, f, _ in prompted if s == "a")
    assert planned.prompt_text is not None
    trained = {
        e.embedding for e in examples if e.subtask == "a" and e.input_chars == {"topic": len(TOPICS[1])}
    }
    assert trained == {tuple(embedder.embed([planned.prompt_text])[0])}


def _retried_runs(runs: int, *, record_batches: bool) -> list[AttemptExample]:
    """Runs that try `small` once per batch until it passes (at most 4 batches).

    Each input has an observable size x and a hidden difficulty h: p = σ(0.5 + (x − 6) − h).
    Hard inputs are tried again and again, so most recorded attempts are on hard inputs.
    `record_batches=False` records every attempt as a run of its own (what an estimator that
    does not know the retries sees).
    """
    rng = np.random.default_rng(11)
    examples = []
    for run in range(runs):
        x, h = rng.uniform(4.0, 8.0), rng.normal(0.0, 1.5)
        p = _sigmoid(0.5 + (x - 6) - h)
        for batch in range(4):
            passed = bool(rng.random() < p)
            found = _example(run, outcome=_verdict(passed), chars=_chars(x))
            run_id = found.run_id if record_batches else f"{found.run_id}-{batch}"
            examples.append(
                replace(
                    found,
                    run_id=run_id,
                    attempt_id=f"{found.attempt_id}-{batch}",
                    batch=batch if record_batches else 0,
                )
            )
            if passed:
                break
    return examples


def _fresh_truth(x: float) -> float:
    """A fresh input's success at size x: the mean over the hidden difficulty."""
    draws = np.random.default_rng(5).normal(0.0, 1.5, 20_000)
    return float(np.mean(1 / (1 + np.exp(-(0.5 + (x - 6) - draws)))))


def test_success_is_for_a_fresh_input_although_hard_inputs_are_retried() -> None:
    at = [math.log1p(_chars(x)) for x in (5.0, 6.0, 7.0)]
    features = [RequestFeatures(input_chars={"doc": _chars(x)}) for x in (5.0, 6.0, 7.0)]

    def errors(examples: list[AttemptExample]) -> list[float]:
        learned = LearnedEstimator(fit_estimator(examples, workflow="w", seed=0))
        found = [learned.success_probability("s", "small", f) for f in features]
        return [abs((p or 0.0) - _fresh_truth(x)) for p, x in zip(found, at, strict=True)]

    assert max(errors(_retried_runs(3000, record_batches=True))) <= 0.04
    # Counting every attempt as if made on a fresh input under-states the odds.
    assert max(errors(_retried_runs(3000, record_batches=False))) >= 0.08


def test_a_failure_cut_short_by_the_output_cap_says_nothing_of_skill() -> None:
    examples = [_example(run, chars=100 + run % 5) for run in range(200)]
    examples += [
        _example(run, outcome=AttemptOutcome.FAILED_CHECK, truncated=True, chars=100 + run % 5)
        for run in range(200, 400)
    ]
    assert all(e.skill_verdict is None for e in examples[200:])
    p = LearnedEstimator(fit_estimator(examples, workflow="w")).success_probability(
        "s", "small", RequestFeatures(input_chars={"doc": 102})
    )
    assert p is not None and p >= 0.95, "the truncated failures would halve it"


def test_a_cells_evidence_is_its_prior_strength_plus_its_fresh_verdicts() -> None:
    examples = _retried_runs(300, record_batches=True)
    artifact = fit_estimator(examples, workflow="w", seed=0)
    learned = LearnedEstimator(artifact)
    pooled = pool_examples(examples).cell("w", "s", "small")
    fresh = sum(1 for e in examples if e.batch == 0)
    assert pooled is not None
    evidence = learned.evidence("s", "small")
    assert evidence is not None and evidence > fresh, "the prior's strength on top of the fresh verdicts"
    assert evidence < fresh + 60, "at most the largest prior strength on top"
    assert learned.evidence("s", "unknown") is None
    loaded = LearnedEstimator(EstimatorArtifact.from_json(artifact.to_json()))
    assert loaded.evidence("s", "small") == evidence
