"""Learning curve: how much recorded history closes the gap between wrong priors and the truth.

```text
.venv/bin/python benchmarks/bench_learning.py            # full: runs 0..1,000, 100 inputs
.venv/bin/python benchmarks/bench_learning.py --quick    # runs 0, 10, 30; 24 inputs
```

The workload (`benchmarks/_learning_workload.py`) is one recurring workflow whose inputs
show part of their difficulty. Collection runs go one after another as production would:
MCPP with the newest learned estimator and in-run updates, each run's records written
through `storage.SqlRecorder` (content on) into a SQLite file. At each checkpoint N the
estimators are trained on everything recorded so far, then every method runs the same
fresh inputs over a budget x deadline grid (common random numbers: input i always has
the same seed). See docs/learning_curve.md for the generative model, the methods and
the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._learning_metrics import (
    bootstrap_ratio,
    cost_at_completion,
    reliability,
    score_predictions,
)
from benchmarks._learning_report import Report, charts, format_table
from benchmarks._learning_workload import (
    WORKFLOW,
    LearningInput,
    catalog,
    make_input,
    prior_estimates,
    true_estimates,
    workflow_for,
)
from orchestrator.estimates import AttemptEstimate
from orchestrator.estimator import Estimator, RequestFeatures, TableEstimator
from orchestrator.exploration import ThompsonEstimator
from orchestrator.plan import Policy
from orchestrator.run import RunResult
from orchestrator.simulation import simulate
from policies import AlwaysStrongest, DirectRouter, make_policy
from policies.bench import wilson_interval

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "learning.json"
ABLATION = ROOT / "benchmarks" / "results" / "learning_ablation.json"
DOCS = ROOT / "docs"

Cell = tuple[float, float]
"""(budget in USD, deadline in seconds)."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """One benchmark configuration."""

    runs: tuple[int, ...] = (0, 10, 30, 100, 300, 1000)
    """Checkpoints: recorded runs the estimators are trained on."""
    inputs: int = 100
    """Fresh evaluation inputs."""
    budgets: tuple[float, ...] = (0.0015, 0.003, 0.006)
    deadlines: tuple[float, ...] = (20.0, 45.0)
    thresholds: tuple[float, ...] = (0.6, 0.8)
    """The direct router's thresholds; per cell its best one counts (in its favour)."""
    seed: int = 0
    target_runs: int = 300
    """The checkpoint the targets are judged at (or the largest below it)."""
    explore: bool = True
    """Collection runs plan on beliefs drawn from their uncertainty (`orchestrator.ThompsonEstimator`)."""

    @property
    def cells(self) -> list[Cell]:
        return [(b, d) for d in self.deadlines for b in self.budgets]


QUICK = Settings(runs=(0, 10, 30), inputs=24, thresholds=(0.7,), target_runs=30)


# -- estimators ----------------------------------------------------------------------------


class FirstOpinion:
    """The first estimator's answer that is not `None`: a learned model, then the priors.

    Every method ends with the priors, so that no (subtask, model) ever falls through to the
    workflow's own estimates, which are the simulation's truth.
    """

    def __init__(self, *estimators: Estimator) -> None:
        self._estimators = estimators

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        for estimator in self._estimators:
            found = estimator.estimate(workflow, subtask, model, features)
            if found is not None:
                return found
        return None

    def evidence(self, subtask: str, model: str) -> float | None:
        """The weight of the first estimator that weighs (subtask, model)'s belief (exploration's `k`)."""
        for estimator in self._estimators:
            weigh = getattr(estimator, "evidence", None)
            found = weigh(subtask, model) if callable(weigh) else None
            if isinstance(found, int | float):
                return float(found)
        return None


class FeatureCapture:
    """Passes every question on, and keeps the features each (subtask, model) was last asked with."""

    def __init__(self, inner: Estimator) -> None:
        self._inner = inner
        self.features: dict[tuple[str, str], RequestFeatures] = {}

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        if features.prompt_tokens is not None:
            self.features[(subtask, model)] = features
        return self._inner.estimate(workflow, subtask, model, features)


@dataclass(frozen=True, kw_only=True)
class Trained:
    """What was learned from the first N recorded runs."""

    runs: int
    table: Mapping[tuple[str, str], AttemptEstimate]
    """`storage.learn_estimates`: per (subtask, model), empty before 8 verdicts."""
    learned: Estimator
    """The learned per-input estimator (`storage.learned_estimator`)."""
    fit_metrics: dict[str, Any]
    """Its own held-out metrics on recorded attempts."""
    fit_s: float


def _train(url: str, runs: int) -> Trained:
    from storage import extract_examples, learn_estimates
    from storage.learned_estimator import HashingEmbedder, LearnedEstimator, fit_estimator

    started = time.perf_counter()
    embedder = HashingEmbedder()
    examples = extract_examples(
        url, workflow=workflow_for(prior_estimates()), only_simulated=True, embedder=embedder
    )
    artifact = fit_estimator(examples, workflow=WORKFLOW, embedder=embedder, seed=0)
    table = learn_estimates(url, WORKFLOW, include_simulated=True) if runs else {}
    return Trained(
        runs=runs,
        table=table,
        learned=LearnedEstimator(artifact),
        fit_metrics=asdict(artifact.metrics),
        fit_s=time.perf_counter() - started,
    )


# -- one run ----------------------------------------------------------------------------------


def _run(
    item: LearningInput,
    budget_usd: float,
    deadline_s: float | None,
    *,
    policy: Policy,
    estimator: Estimator,
    update_in_run: bool,
    record_content: bool = False,
) -> RunResult:
    return simulate(
        workflow_for(true_estimates(item)),
        catalog=catalog(),
        policy=policy,
        budget_usd=budget_usd,
        deadline_s=deadline_s,
        seed=item.seed,
        inputs={"issue": item.text},
        estimator=estimator,
        update_in_run=update_in_run,
        record_content=record_content,
    )


@dataclass(frozen=True, kw_only=True)
class Method:
    """One way of planning, evaluated on every input and cell."""

    name: str
    policy: Callable[[int], Policy]
    estimator: Callable[[LearningInput], Estimator]
    update_in_run: bool


def _methods(trained: Trained, settings: Settings) -> list[Method]:
    priors = TableEstimator(prior_estimates())
    table = FirstOpinion(TableEstimator(trained.table), priors)
    learned = FirstOpinion(trained.learned, priors)

    def mcpp(seed: int) -> Policy:
        return make_policy("mcpp", seed=seed)

    out = [
        Method(name="table", policy=mcpp, estimator=lambda item: table, update_in_run=False),
        Method(name="learned", policy=mcpp, estimator=lambda item: learned, update_in_run=False),
        Method(name="learned+in-run", policy=mcpp, estimator=lambda item: learned, update_in_run=True),
    ]
    for threshold in settings.thresholds:
        out.append(
            Method(
                name=f"router@{threshold:g}",
                policy=lambda seed, t=threshold: DirectRouter(threshold=t),  # type: ignore[misc]
                estimator=lambda item: learned,
                update_in_run=False,
            )
        )
    return out


def _fixed_methods() -> list[Method]:
    priors = TableEstimator(prior_estimates())

    def mcpp(seed: int) -> Policy:
        return make_policy("mcpp", seed=seed)

    return [
        Method(name="priors", policy=mcpp, estimator=lambda item: priors, update_in_run=False),
        Method(
            name="oracle",
            policy=mcpp,
            estimator=lambda item: TableEstimator(true_estimates(item)),
            update_in_run=False,
        ),
    ]


@dataclass(kw_only=True)
class Outcomes:
    """Per evaluation input and cell: completed within budget and deadline, and the spend."""

    completed: np.ndarray[Any, np.dtype[np.float64]]
    cost: np.ndarray[Any, np.dtype[np.float64]]


def _evaluate(method: Method, items: Sequence[LearningInput], cells: Sequence[Cell]) -> Outcomes:
    completed = np.zeros((len(items), len(cells)))
    cost = np.zeros((len(items), len(cells)))
    for i, item in enumerate(items):
        for j, cell in enumerate(cells):
            result = _run(
                item,
                *cell,
                policy=method.policy(item.seed),
                estimator=method.estimator(item),
                update_in_run=method.update_in_run,
            )
            completed[i, j] = result.outcome.value == "completed"
            cost[i, j] = float(result.spent_usd)
    return Outcomes(completed=completed, cost=cost)


def _best_router(outcomes: Mapping[str, Outcomes]) -> Outcomes:
    """Per cell, the router threshold with the highest completion (then the lower cost)."""
    routers = [o for name, o in outcomes.items() if name.startswith("router@")]
    completed = np.zeros_like(routers[0].completed)
    cost = np.zeros_like(routers[0].cost)
    for j in range(completed.shape[1]):
        best = max(routers, key=lambda o: (o.completed[:, j].mean(), -o.cost[:, j].mean()))
        completed[:, j], cost[:, j] = best.completed[:, j], best.cost[:, j]
    return Outcomes(completed=completed, cost=cost)


# -- collection -------------------------------------------------------------------------------


async def _write(url: str, results: Sequence[RunResult]) -> None:
    """Write finished runs through the SQL recorder, in the order their events happened."""
    from storage import SqlRecorder

    recorder = await SqlRecorder.open(url, record_content=True)
    try:
        for result in results:
            await recorder.run_started(result.run)
            for decision in result.decisions:
                await recorder.decision_made(decision)
            for attempt in result.attempts:
                await recorder.attempt_started(attempt)
            for call in result.calls:
                await recorder.call_finished(call)
            for attempt in result.attempts:
                await recorder.attempt_finished(attempt)
            for subtask in result.subtasks:
                await recorder.subtask_changed(subtask)
            await recorder.run_finished(result.run)
    finally:
        await recorder.aclose()


def collect(
    url: str,
    items: Sequence[LearningInput],
    estimator: Estimator,
    cells: Sequence[Cell],
    seed: int,
    *,
    explore: bool = True,
) -> None:
    """Run `items` as production would (MCPP, in-run updates, content recorded) and record them;
    with `explore`, each run plans on beliefs drawn from their uncertainty (Thompson sampling)."""
    rng = np.random.default_rng([seed, 0xC011])
    results = []
    for item in items:
        cell = cells[int(rng.integers(len(cells)))]
        results.append(
            _run(
                item,
                *cell,
                policy=make_policy("mcpp", seed=item.seed),
                estimator=ThompsonEstimator(estimator, seed=item.seed) if explore else estimator,
                update_in_run=True,
                record_content=True,
            )
        )
    asyncio.run(_write(url, results))


# -- prediction quality -----------------------------------------------------------------------


def probe_features(items: Sequence[LearningInput]) -> list[dict[tuple[str, str], RequestFeatures]]:
    """The features the executor gives the estimator for every (subtask, model) of each input.

    One unhurried run per input (the strongest model, a large budget, no deadline) so that
    every subtask becomes ready and its prompt is counted; what it was asked with is kept.
    """
    out = []
    for item in items:
        capture = FeatureCapture(TableEstimator(prior_estimates()))
        _run(item, 1.0, None, policy=AlwaysStrongest(), estimator=capture, update_in_run=False)
        out.append(dict(capture.features))
    return out


def predictions(
    estimator: Estimator,
    items: Sequence[LearningInput],
    features: Sequence[Mapping[tuple[str, str], RequestFeatures]],
) -> list[tuple[AttemptEstimate, AttemptEstimate]]:
    pairs = []
    for item, asked in zip(items, features, strict=True):
        truth = true_estimates(item)
        for key, feats in asked.items():
            found = estimator.estimate(WORKFLOW, key[0], key[1], feats)
            if found is not None:
                pairs.append((found, truth[key]))
    return pairs


# -- the benchmark ----------------------------------------------------------------------------


def _summary(outcomes: Outcomes, cells: Sequence[Cell]) -> dict[str, Any]:
    n = outcomes.completed.shape[0]
    per_cell = []
    for j, (budget, deadline) in enumerate(cells):
        k = int(outcomes.completed[:, j].sum())
        low, high = wilson_interval(k, n)
        costs = outcomes.cost[:, j]
        half = 1.96 * float(costs.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
        per_cell.append(
            {
                "budget_usd": budget,
                "deadline_s": deadline,
                "completion": k / n,
                "completion_ci": [low, high],
                "mean_cost_usd": float(costs.mean()),
                "mean_cost_ci": [float(costs.mean()) - half, float(costs.mean()) + half],
            }
        )
    grid = outcomes.completed.mean()
    return {
        "grid_completion": float(grid),
        "grid_mean_cost_usd": float(outcomes.cost.mean()),
        "cells": per_cell,
    }


def _matched_costs(
    outcomes: Mapping[str, Outcomes], settings: Settings, reference: str
) -> dict[str, dict[str, float | None]]:
    """Per deadline: the completion the `reference` method reaches at the largest budget, and the
    mean cost at which each method reaches it (linear between budgets)."""
    cells = settings.cells
    out: dict[str, dict[str, float | None]] = {}
    for deadline in settings.deadlines:
        idx = [j for j, c in enumerate(cells) if c[1] == deadline]
        target = float(outcomes[reference].completed[:, idx[-1]].mean())
        row: dict[str, float | None] = {"target_completion": target}
        for name, o in outcomes.items():
            curve = [(float(o.cost[:, j].mean()), float(o.completed[:, j].mean())) for j in idx]
            row[name] = cost_at_completion(curve, target)
        out[f"{deadline:g}"] = row
    return out


def run_benchmark(settings: Settings, *, workdir: Path, log: Callable[[str], None] = print) -> Report:
    """Collect, train at each checkpoint, evaluate every method; return the report."""
    cells = settings.cells
    report = Report(
        settings={**asdict(settings), "cells": cells},
        machine={
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        cells=[{"budget_usd": b, "deadline_s": d} for b, d in cells],
    )
    started = time.perf_counter()
    fresh = [make_input(settings.seed * 10 + 2, i) for i in range(settings.inputs)]
    collection = [make_input(settings.seed * 10 + 1, i) for i in range(max(settings.runs))]
    url = f"sqlite:///{workdir / 'learning.db'}"

    from storage import upgrade

    upgrade(url)  # an empty database: the checkpoint at 0 runs trains on nothing
    features = probe_features(fresh)
    priors_estimator = TableEstimator(prior_estimates())
    fixed: dict[str, Outcomes] = {}
    for method in _fixed_methods():
        t = time.perf_counter()
        fixed[method.name] = _evaluate(method, fresh, cells)
        report.fixed[method.name] = _summary(fixed[method.name], cells)
        grid = fixed[method.name].completed.mean()
        log(f"{method.name}: grid completion {grid:.3f} ({time.perf_counter() - t:.0f} s)")
    report.fixed["priors"]["prediction"] = asdict(
        score_predictions(predictions(priors_estimator, fresh, features))
    )
    per_input = {name: o.completed.mean(axis=1) for name, o in fixed.items()}

    collect_s = train_s = eval_s = 0.0
    recorded = 0
    current: Estimator = priors_estimator
    for n in sorted(settings.runs):
        t = time.perf_counter()
        if n > recorded:
            collect(
                url,
                collection[recorded:n],
                current,
                cells,
                settings.seed * 7919 + recorded,
                explore=settings.explore,
            )
            recorded = n
        collect_s += time.perf_counter() - t
        t = time.perf_counter()
        trained = _train(url, n)
        train_s += time.perf_counter() - t
        current = FirstOpinion(trained.learned, priors_estimator)
        t = time.perf_counter()
        outcomes: dict[str, Outcomes] = {}
        for method in _methods(trained, settings):
            outcomes[method.name] = _evaluate(method, fresh, cells)
        outcomes["router"] = _best_router(outcomes)
        eval_s += time.perf_counter() - t
        checkpoint: dict[str, Any] = {"runs": n, "fit_metrics": trained.fit_metrics, "fit_s": trained.fit_s}
        methods: dict[str, Any] = {}
        for name, o in outcomes.items():
            summary = _summary(o, cells)
            point, low, high = bootstrap_ratio(
                o.completed.mean(axis=1), per_input["priors"], per_input["oracle"], seed=settings.seed
            )
            summary["gap_closed"] = point
            summary["gap_closed_ci"] = [low, high]
            methods[name] = summary
        for name, estimator in (
            ("table", FirstOpinion(TableEstimator(trained.table), priors_estimator)),
            ("learned", current),
        ):
            pairs = predictions(estimator, fresh, features)
            methods[name]["prediction"] = asdict(score_predictions(pairs))
            if name == "learned":
                methods[name]["reliability"] = reliability(
                    [p.success_prob for p, _ in pairs], [t.success_prob for _, t in pairs]
                )
        checkpoint["methods"] = methods
        checkpoint["matched_cost"] = _matched_costs({**fixed, **outcomes}, settings, reference="router")
        checkpoint["router_beaten"] = _router_beaten(outcomes, cells)
        report.checkpoints.append(checkpoint)
        log(
            f"N={n}: "
            + ", ".join(
                f"{k} {methods[k]['grid_completion']:.3f}"
                for k in ("table", "learned", "learned+in-run", "router")
            )
            + f"; learned ECE {methods['learned']['prediction']['ece']:.3f} ({time.perf_counter() - t:.0f} s)"
        )
    report.timing_s = {
        "total": time.perf_counter() - started,
        "collect": collect_s,
        "train": train_s,
        "evaluate": eval_s,
    }
    return report


def _router_beaten(outcomes: Mapping[str, Outcomes], cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Per cell: learned + in-run updates against the direct router (its best threshold)."""
    ours, router = outcomes["learned+in-run"], outcomes["router"]
    rows = []
    for j, (budget, deadline) in enumerate(cells):
        a, b = ours.completed[:, j].mean(), router.completed[:, j].mean()
        ca, cb = ours.cost[:, j].mean(), router.cost[:, j].mean()
        rows.append(
            {
                "budget_usd": budget,
                "deadline_s": deadline,
                "completion": [float(a), float(b)],
                "mean_cost_usd": [float(ca), float(cb)],
                "beaten": bool(a > b or (a == b and ca < cb)),
            }
        )
    return rows


def _numbers(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got `{text}`") from None
    if not values or any(v < 0 or not math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{what} must be one or more non-negative numbers, got `{text}`")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_learning.py",
        description="Learning curve of the per-input estimator (docs/learning_curve.md).",
    )
    parser.add_argument("--quick", action="store_true", help="runs 0,10,30 and 24 inputs (~2 min)")
    parser.add_argument(
        "--runs", type=lambda t: _numbers(t, "--runs"), help="checkpoints, e.g. 0,10,30,100,300,1000"
    )
    parser.add_argument("--inputs", type=int, help="fresh evaluation inputs (default 100; 24 with --quick)")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="instead: fit on three selections of the recorded attempts and score each (300 runs, 40 inputs)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the input streams (default 0)")
    parser.add_argument(
        "--no-explore",
        action="store_true",
        help="collect on the estimator's best guesses (default: Thompson sampling of its beliefs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results (default benchmarks/results/learning.json, or learning_ablation.json)",
    )
    parser.add_argument(
        "--charts", type=Path, default=DOCS, help="directory for the two PNG charts (default docs/)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the tables; write the JSON and the charts."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    settings = QUICK if args.quick else Settings()
    changes: dict[str, Any] = {"seed": args.seed, "explore": not args.no_explore}
    if args.runs is not None:
        if any(r != int(r) for r in args.runs):
            print("bench_learning: --runs must be whole numbers, e.g. 0,10,30", file=sys.stderr)
            return 2
        changes["runs"] = tuple(sorted({int(r) for r in args.runs}))
    if args.inputs is not None:
        if args.inputs < 2:
            print(f"bench_learning: --inputs must be at least 2, got {args.inputs}", file=sys.stderr)
            return 2
        changes["inputs"] = args.inputs
    settings = Settings(**{**asdict(settings), **changes})
    out: Path = args.out or (ABLATION if args.ablation else RESULTS)
    if not out.parent.is_dir() or not args.charts.is_dir():
        print(
            f"bench_learning: the directory of `{out}` or `{args.charts}` does not exist; create it first",
            file=sys.stderr,
        )
        return 2
    if args.ablation:
        return _ablation(args, out)
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        report = run_benchmark(
            settings, workdir=Path(tmp), log=lambda line: print(line, file=sys.stderr, flush=True)
        )
    table = format_table(report, settings.target_runs)
    print(table)
    out.write_text(json.dumps(asdict(report), indent=1) + "\n")
    for path in charts(report, args.charts):
        print(f"wrote {path}", file=sys.stderr)
    print(f"wrote {out} ({report.timing_s['total']:.0f} s)", file=sys.stderr)
    return 0


def _ablation(args: argparse.Namespace, out: Path) -> int:
    from benchmarks._learning_ablation import format_ablation, training_data_ablation

    runs = int(max(args.runs)) if args.runs else 300
    settings = Settings(inputs=args.inputs or 40, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as tmp:
        result = training_data_ablation(settings, runs=runs, workdir=Path(tmp))
    print(format_ablation(result))
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} ({result['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
