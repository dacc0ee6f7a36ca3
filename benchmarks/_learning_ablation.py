"""Which recorded attempts to learn a fresh input's odds from: an ablation of the training data.

Recorded attempts are not a sample of fresh inputs' first attempts: a hard input is
retried and raced, so it leaves many failures, and an attempt stopped at `max_tokens`
is recorded as a failed check although the cap, not the model, failed it. This fits the
learned estimator three times on the same recorded runs (collected with the priors'
beliefs, as production starts) and scores each on fresh inputs against their truth:

1. every attempt (what `fit_estimator` is given by default);
2. without the truncated failures;
3. only the first attempt of each (run, subtask, model), without truncated failures.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks._learning_metrics import score_predictions
from benchmarks._learning_workload import WORKFLOW, make_input, prior_estimates, workflow_for
from benchmarks.bench_learning import FirstOpinion, Settings, collect, predictions, probe_features
from orchestrator.estimator import TableEstimator

__all__ = ["format_ablation", "training_data_ablation"]


def training_data_ablation(settings: Settings, *, runs: int, workdir: Path) -> dict[str, Any]:
    """Collect `runs` runs with the priors, fit three ways, score each on `settings.inputs` fresh inputs."""
    from storage import AttemptExample, extract_examples, upgrade
    from storage.learned_estimator import HashingEmbedder, LearnedEstimator, fit_estimator

    started = time.perf_counter()
    url = f"sqlite:///{workdir / 'ablation.db'}"
    upgrade(url)
    priors = TableEstimator(prior_estimates())
    recorded = [make_input(settings.seed * 10 + 1, i) for i in range(runs)]
    collect(url, recorded, priors, settings.cells, settings.seed, explore=settings.explore)
    embedder = HashingEmbedder()
    examples = extract_examples(
        url, workflow=workflow_for(prior_estimates()), only_simulated=True, embedder=embedder
    )
    fresh = [make_input(settings.seed * 10 + 2, i) for i in range(settings.inputs)]
    features = probe_features(fresh)

    untruncated = [e for e in examples if not (e.truncated and e.success is False)]
    first: dict[tuple[str, str, str], AttemptExample] = {}
    for e in untruncated:
        key = (e.run_id, e.subtask, e.model)
        if key not in first or (e.batch, e.sample) < (first[key].batch, first[key].sample):
            first[key] = e
    variants = {
        "every attempt": examples,
        "without truncated failures": untruncated,
        "first attempt per (run, subtask, model), without truncated failures": list(first.values()),
    }
    rows = []
    for name, chosen in variants.items():
        artifact = fit_estimator(chosen, workflow=WORKFLOW, embedder=embedder, seed=0)
        estimator = FirstOpinion(LearnedEstimator(artifact), priors)
        scores = score_predictions(predictions(estimator, fresh, features))
        rows.append({"training data": name, "examples": len(chosen), **asdict(scores)})
    return {"runs": runs, "inputs": settings.inputs, "rows": rows, "seconds": time.perf_counter() - started}


def format_ablation(result: dict[str, Any]) -> str:
    """The ablation as a Markdown table."""
    lines = [
        f"Training data ablation: {result['runs']} runs recorded with the priors,"
        f" {result['inputs']} fresh inputs",
        "",
        "| training data | examples | ECE | AUROC | Brier |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['training data']} | {row['examples']} | {row['ece']:.3f} | {row['auroc']:.3f} |"
            f" {row['brier']:.3f} |"
        )
    return "\n".join(lines)
