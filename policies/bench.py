"""Planner benchmark: completion probability of policies over a DAG pool and a budget x deadline grid.

```text
python -m policies.bench --pool pool_dev.jsonl --budgets 0.01,0.03,0.1,0.3 \\
    --deadlines 45,90,180,360 --trials 2 --policies mcpp,always_cheapest --jobs 2 \\
    --out planners.json --heatmap planners.png
```

Every trial is a whole run of the real executor on virtual time with the
seeded simulated backend (`orchestrator.simulation.simulate`). Trial `t` of DAG
`d` uses the same seed for every policy and every cell (common random numbers:
the n-th call of a (subtask, model) sees the same draw). For each cell and
policy: completion probability with a 95% Wilson interval over DAGs x trials,
mean spend, mean makespan, and the median and 99th percentile of decision time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import ConfigError, UserError
from orchestrator.plan import Allocation, PlanState, Policy
from policies.dag_pool import pool_workflow, read_pool
from policies.registry import make_policy

__all__ = ["StateCapture", "main", "wilson_interval"]

_BASELINE_EXCLUDE = ("mcpp",)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class StateCapture:
    """A policy that passes every decision to `inner` and keeps a frozen copy of each state with ready work.

    The copies outlive the run (`completed`, `attempts` and `estimates` are copied out of the
    executor's live views), so that other policies can be timed or judged on exactly the states
    visited.
    """

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.name = inner.name
        self.states: list[PlanState] = []

    def decide(self, state: PlanState) -> Allocation:
        """Keep a copy of `state`, then answer as `inner` does."""
        if state.ready:
            self.states.append(
                dataclasses.replace(
                    state,
                    completed=frozenset(state.completed),
                    attempts=dict(state.attempts),
                    estimates=dict(state.estimates),
                )
            )
        return self.inner.decide(state)


@dataclass(frozen=True, kw_only=True)
class _Unit:
    pool: str
    dag: int
    policy: str
    budgets: tuple[float, ...]
    deadlines: tuple[float, ...]
    trials: int
    seed: int


def _run_unit(unit: _Unit) -> list[dict[str, Any]]:
    from orchestrator.simulation import simulate

    if unit.policy.startswith("mcpp"):
        from policies.rollout import warm_up

        warm_up()  # compile or load the rollout kernel before any decision is timed
    problem = read_pool(unit.pool)[unit.dag]
    workflow, catalog = pool_workflow(problem)
    rows = []
    for trial in range(unit.trials):
        seed = unit.seed * 1_000_003 + unit.dag * 1_009 + trial
        for budget in unit.budgets:
            for deadline in unit.deadlines:
                policy = make_policy(unit.policy, seed=seed)
                result = simulate(
                    workflow,
                    catalog=catalog,
                    policy=policy,
                    budget_usd=budget,
                    deadline_s=deadline,
                    seed=seed,
                )
                rows.append(
                    {
                        "policy": unit.policy,
                        "dag": problem.problem_id,
                        "trial": trial,
                        "budget": budget,
                        "deadline": deadline,
                        "outcome": str(result.outcome),
                        "spent": float(result.spent_usd),
                        "makespan": result.makespan_s,
                        "decide_ms": [d.decide_ms for d in result.decisions],
                    }
                )
    return rows


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="budgetflow bench planners", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True, help="DAG-pool JSONL file")
    parser.add_argument("--budgets", default="0.01,0.03,0.1,0.3", help="comma-separated USD budgets")
    parser.add_argument("--deadlines", default="45,90,180,360", help="comma-separated deadlines, seconds")
    parser.add_argument("--trials", type=int, default=1, help="trials per DAG and cell")
    parser.add_argument(
        "--policies",
        default="mcpp,always_cheapest,always_strongest,split_uniform,threshold_router,dual_mirror_descent",
        help="comma-separated policy names",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (same for every policy)")
    parser.add_argument("--limit-dags", type=int, default=None, help="use only the first N DAGs")
    parser.add_argument("--out", default=None, help="write results as JSON here")
    parser.add_argument("--heatmap", default=None, help="write a PNG heatmap of MCPP minus the best baseline")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(list(argv))


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"`{flag}` must be comma-separated numbers, got `{text}`") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"`{flag}` needs positive numbers, got `{text}`")
    return values


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    wins = sum(r["outcome"] == "completed" for r in rows)
    lo, hi = wilson_interval(wins, n)
    ms = [m for r in rows for m in r["decide_ms"]]
    return {
        "n": n,
        "completed": wins,
        "p": wins / n if n else 0.0,
        "ci95": [lo, hi],
        "mean_spend_usd": float(np.mean([r["spent"] for r in rows])) if rows else 0.0,
        "mean_makespan_s": float(np.mean([r["makespan"] for r in rows])) if rows else 0.0,
        "decisions": len(ms),
        "decide_ms_median": _percentile(ms, 50),
        "decide_ms_p99": _percentile(ms, 99),
        "outcomes": {o: sum(r["outcome"] == o for r in rows) for o in sorted({r["outcome"] for r in rows})},
    }


def _units(args: argparse.Namespace, n_dags: int, policies: list[str]) -> list[_Unit]:
    budgets = _floats(args.budgets, "--budgets")
    deadlines = _floats(args.deadlines, "--deadlines")
    units = [
        _Unit(
            pool=args.pool,
            dag=d,
            policy=p,
            budgets=budgets,
            deadlines=deadlines,
            trials=args.trials,
            seed=args.seed,
        )
        for p in policies
        for d in range(n_dags)
    ]
    # heavy units first (MCPP on big DAGs) so that the workers finish together
    return sorted(units, key=lambda u: (not u.policy.startswith("mcpp"), -u.dag))


def _execute(units: list[_Unit], jobs: int, quiet: bool) -> Iterator[list[dict[str, Any]]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]planners"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=quiet
    ) as progress:
        task = progress.add_task("runs", total=len(units))
        if jobs <= 1:
            for unit in units:
                yield _run_unit(unit)
                progress.advance(task)
            return
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as pool:
            for rows in pool.imap_unordered(_run_unit, units):
                yield rows
                progress.advance(task)


def _table(summary: dict[str, Any], policies: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    overall = Table(title="All cells")
    for col in ("policy", "p(complete)", "95% CI", "mean spend $", "mean makespan s", "decide ms p50/p99"):
        overall.add_column(col)
    for p in policies:
        s = summary["overall"][p]
        med, p99 = s["decide_ms_median"], s["decide_ms_p99"]
        overall.add_row(
            p,
            f"{s['p']:.3f}",
            f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]",
            f"{s['mean_spend_usd']:.4f}",
            f"{s['mean_makespan_s']:.1f}",
            "-" if med is None else f"{med:.1f} / {p99:.1f}",
        )
    console.print(overall)
    cells = Table(title="Per cell: completion probability (95% Wilson CI)")
    for col in ("budget $", "deadline s", "ours", "p ours", "best baseline", "p baseline", "delta"):
        cells.add_column(col)
    ours = next((p for p in policies if p.startswith("mcpp")), policies[0])
    base = [p for p in policies if not p.startswith(_BASELINE_EXCLUDE)] or policies
    for key, per_policy in summary["cells"].items():
        budget, deadline = key.split("|")
        best = max(base, key=lambda p: per_policy[p]["p"])
        mine, theirs = per_policy[ours], per_policy[best]
        cells.add_row(
            budget,
            deadline,
            ours,
            f"{mine['p']:.3f} [{mine['ci95'][0]:.2f}, {mine['ci95'][1]:.2f}]",
            best,
            f"{theirs['p']:.3f} [{theirs['ci95'][0]:.2f}, {theirs['ci95'][1]:.2f}]",
            f"{mine['p'] - theirs['p']:+.3f}",
        )
    console.print(cells)


def _heatmap(
    summary: dict[str, Any],
    policies: list[str],
    budgets: tuple[float, ...],
    deadlines: tuple[float, ...],
    path: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [p for p in policies if p.startswith("mcpp")]
    base = [p for p in policies if not p.startswith(_BASELINE_EXCLUDE)]
    if not ours or not base:
        raise ConfigError("`--heatmap` needs an `mcpp` policy and at least one baseline in `--policies`")
    grid = np.zeros((len(budgets), len(deadlines)))
    for i, b in enumerate(budgets):
        for j, d in enumerate(deadlines):
            cell = summary["cells"][f"{b:g}|{d:g}"]
            grid[i, j] = cell[ours[0]]["p"] - max(cell[p]["p"] for p in base)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    lim = max(0.05, float(np.abs(grid).max()))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, origin="lower")
    ax.set_xticks(range(len(deadlines)), [f"{d:g}" for d in deadlines])
    ax.set_yticks(range(len(budgets)), [f"{b:g}" for b in budgets])
    ax.set_xlabel("deadline (s)")
    ax.set_ylabel("budget (USD)")
    ax.set_title(f"{ours[0]} minus best baseline: completion probability")
    for i in range(len(budgets)):
        for j in range(len(deadlines)):
            ax.text(j, i, f"{grid[i, j]:+.2f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str]) -> int:
    """Run the benchmark; 0 on success, 2 on bad arguments."""
    try:
        args = _parse(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        for p in policies:
            make_policy(p)  # fail fast on unknown names
        budgets = _floats(args.budgets, "--budgets")
        deadlines = _floats(args.deadlines, "--deadlines")
        if args.trials < 1 or args.jobs < 1:
            raise ConfigError("`--trials` and `--jobs` must be >= 1")
        problems = read_pool(args.pool)
        n_dags = len(problems) if args.limit_dags is None else min(args.limit_dags, len(problems))
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        for chunk in _execute(_units(args, n_dags, policies), args.jobs, args.quiet):
            rows.extend(chunk)
        wall = time.perf_counter() - t0
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    by_cell: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_cell[f"{r['budget']:g}|{r['deadline']:g}"][r["policy"]].append(r)
        by_policy[r["policy"]].append(r)
    summary: dict[str, Any] = {
        "command": "budgetflow bench planners " + " ".join(argv),
        "engine": "orchestrator.simulation.simulate (real executor, virtual time)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "wall_s": wall,
        "dags": n_dags,
        "trials": args.trials,
        "budgets": list(budgets),
        "deadlines": list(deadlines),
        "policies": policies,
        "overall": {p: _summarise(by_policy[p]) for p in policies},
        "cells": {
            f"{b:g}|{d:g}": {p: _summarise(by_cell[f"{b:g}|{d:g}"][p]) for p in policies}
            for b in budgets
            for d in deadlines
        },
    }
    _table(summary, policies)
    print(f"{len(rows)} runs in {wall:.0f}s on {os.cpu_count()} cpus")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    if args.heatmap:
        _heatmap(summary, policies, budgets, deadlines, args.heatmap)
    return 0
