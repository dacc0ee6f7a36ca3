"""MCPP decision time and racing-vs-full-M completion, measured in one run.

```text
python benchmarks/bench_mcpp_decision.py                      # defaults below, 2 workers
python benchmarks/bench_mcpp_decision.py --trials 1 --limit-dags 5 --jobs 1   # a smoke run
```

Every run is a whole execution of the real executor on virtual time with the
seeded simulated backend (`orchestrator.simulation.simulate`), on the DAGs of the
pool, for `mcpp` (racing) and `mcpp_full` (M = 64 rollouts for every (action,
continuation) pair, no racing) on the same seeds (trial `t` of DAG `d` uses the
seed `policies.bench` uses). Decision times are the executor's `decide_ms` of every
decision of those runs (the states actually visited), wall clock, after the
rollout kernel was compiled (`policies.rollout.warm_up` in every worker before the
first run). Completion probabilities come with 95% Wilson intervals, and the
racing-minus-full difference with a paired 95% interval (same DAG, cell and seed)
and an exact McNemar p-value from the discordant pairs.

Writes `benchmarks/results/mcpp_decision.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.plan import Allocation, PlanState, Policy
from policies.bench import wilson_interval
from policies.dag_pool import pool_workflow, read_pool

DEV_POOL = Path(__file__).resolve().parent / "data" / "pool_dev.jsonl"
"""The DAG pool shipped with the repository (40 CodeFlow-like DAGs)."""

_POLICIES = ("mcpp", "mcpp_full")
_DEFAULT_CELLS = "0.03:90,0.03:360,0.1:45,0.3:45"


@dataclass(frozen=True, kw_only=True)
class _Unit:
    pool: str
    dag: int
    policy: str
    cells: tuple[tuple[float, float], ...]
    trials: int
    seed: int


class _CpuTimed:
    """Wraps a policy and records the CPU time of each `decide` (robust to other load on the machine)."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.name = inner.name
        self.cpu_ms: list[float] = []

    def decide(self, state: PlanState) -> Allocation:
        t = time.thread_time()
        out = self.inner.decide(state)
        self.cpu_ms.append((time.thread_time() - t) * 1000)
        return out


def _run_unit(unit: _Unit) -> list[dict[str, Any]]:
    from orchestrator.simulation import simulate
    from policies.registry import make_policy
    from policies.rollout import warm_up

    warm_up()  # compile (or load) the kernel before any decision is timed
    problem = read_pool(unit.pool)[unit.dag]
    workflow, catalog = pool_workflow(problem)
    rows = []
    for trial in range(unit.trials):
        seed = unit.seed * 1_000_003 + unit.dag * 1_009 + trial
        for budget, deadline in unit.cells:
            policy = _CpuTimed(make_policy(unit.policy, seed=seed))
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
                    "subtasks": len(problem.nodes),
                    "trial": trial,
                    "budget": budget,
                    "deadline": deadline,
                    "outcome": str(result.outcome),
                    "decide_ms": [d.decide_ms for d in result.decisions],
                    "decide_cpu_ms": policy.cpu_ms,
                    "rollouts": [int(d.info.get("rollouts", 0) or 0) for d in result.decisions],
                }
            )
    return rows


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=str(DEV_POOL), help="DAG-pool JSONL file (default: the dev pool)")
    parser.add_argument("--cells", default=_DEFAULT_CELLS, help="comma-separated BUDGET:DEADLINE cells")
    parser.add_argument("--trials", type=int, default=3, help="trials per DAG and cell")
    parser.add_argument("--seed", type=int, default=0, help="base seed (as in policies.bench)")
    parser.add_argument("--limit-dags", type=int, default=None, help="use only the first N DAGs")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--racing-only",
        action="store_true",
        help="time `mcpp` only (no `mcpp_full` runs, no completion comparison)",
    )
    parser.add_argument("--out", default="benchmarks/results/mcpp_decision.json", help="JSON output")
    return parser.parse_args(list(argv))


def _times(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ms = np.array([m for r in rows for m in r["decide_ms"]], dtype=float)
    cpu = np.array([m for r in rows for m in r["decide_cpu_ms"]], dtype=float)
    ro = np.array([x for r in rows for x in r["rollouts"]], dtype=float)
    if not len(ms):
        return {"decisions": 0}
    return {
        "decisions": len(ms),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "cpu_median_ms": float(np.median(cpu)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
        "mean_rollouts": float(ro.mean()),
        "max_subtasks": max(r["subtasks"] for r in rows),
    }


def _completion(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    wins = sum(r["outcome"] == "completed" for r in rows)
    lo, hi = wilson_interval(wins, n)
    return {"n": n, "completed": wins, "p": wins / n if n else 0.0, "ci95": [lo, hi]}


def _key(r: dict[str, Any]) -> tuple[str, float, float, int]:
    return (str(r["dag"]), float(r["budget"]), float(r["deadline"]), int(r["trial"]))


def _paired(racing: list[dict[str, Any]], full: list[dict[str, Any]]) -> dict[str, Any]:
    """Racing minus full on the same (DAG, cell, trial): mean difference and a normal 95% interval."""
    a = {_key(r): r["outcome"] == "completed" for r in racing}
    b = {_key(r): r["outcome"] == "completed" for r in full}
    both = sorted(set(a) & set(b))
    if not both:
        return {"n": 0}
    d = np.array([float(a[k]) - float(b[k]) for k in both])
    half = 1.959964 * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
    racing_only, full_only = int((d > 0).sum()), int((d < 0).sum())
    return {
        "n": len(d),
        "diff": float(d.mean()),
        "ci95": [float(d.mean()) - half, float(d.mean()) + half],
        "racing_only": racing_only,
        "full_only": full_only,
        "mcnemar_p": _mcnemar(racing_only, full_only),
    }


def _mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs (a sign test on b vs c)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * float(tail))


def main(argv: Sequence[str]) -> int:
    """Run the benchmark, print the tables, write the JSON; 0 on success."""
    args = _parse(argv)
    policies = ("mcpp",) if args.racing_only else _POLICIES
    cells = tuple(
        (float(c.split(":")[0]), float(c.split(":")[1])) for c in args.cells.split(",") if c.strip()
    )
    problems = read_pool(args.pool)
    n_dags = len(problems) if args.limit_dags is None else min(args.limit_dags, len(problems))
    units = [
        _Unit(pool=args.pool, dag=d, policy=p, cells=cells, trials=args.trials, seed=args.seed)
        for p in policies
        for d in range(n_dags)
    ]
    # heavy first (full M on big DAGs), so the workers finish together
    units.sort(key=lambda u: (u.policy != "mcpp_full", -len(problems[u.dag].nodes)))
    from policies.rollout import warm_up

    warm_up()  # compile once in the parent (the workers fork and load it)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if args.jobs <= 1:
        for u in units:
            rows.extend(_run_unit(u))
    else:
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            for done, chunk in enumerate(pool.imap_unordered(_run_unit, units), 1):
                rows.extend(chunk)
                print(
                    f"\r{done}/{len(units)} units, {time.perf_counter() - t0:.0f}s", end="", file=sys.stderr
                )
        print(file=sys.stderr)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_policy[r["policy"]].append(r)
    sizes = {"3-6": (3, 6), "7-11": (7, 11), "12-16": (12, 16)}
    summary: dict[str, Any] = {
        "command": "python benchmarks/bench_mcpp_decision.py " + " ".join(argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "wall_s": wall,
        "dags": n_dags,
        "cells": [list(c) for c in cells],
        "trials": args.trials,
        "decision_time": {p: _times(by_policy[p]) for p in policies},
        "decision_time_by_size": {
            p: {
                name: _times([r for r in by_policy[p] if lo <= r["subtasks"] <= hi])
                for name, (lo, hi) in sizes.items()
            }
            for p in policies
        },
        "runs": [
            {k: r[k] for k in ("policy", "dag", "subtasks", "trial", "budget", "deadline", "outcome")}
            for r in rows
        ],
    }
    if not args.racing_only:
        summary["completion"] = {p: _completion(by_policy[p]) for p in policies}
        summary["completion_by_cell"] = {
            f"{b:g}|{d:g}": {
                **{
                    p: _completion([r for r in by_policy[p] if (r["budget"], r["deadline"]) == (b, d)])
                    for p in policies
                },
                "paired_racing_minus_full": _paired(
                    [r for r in by_policy["mcpp"] if (r["budget"], r["deadline"]) == (b, d)],
                    [r for r in by_policy["mcpp_full"] if (r["budget"], r["deadline"]) == (b, d)],
                ),
            }
            for b, d in cells
        }
        summary["paired_racing_minus_full"] = _paired(by_policy["mcpp"], by_policy["mcpp_full"])
    _print(summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"{len(rows)} runs in {wall:.0f}s; load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    return 0


def _print(s: dict[str, Any]) -> None:
    print("\nDecision time (ms; wall clock as the executor records it, and CPU time of the decide call)")
    print(
        f"{'policy':<10} {'size':<6} {'decisions':>9} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        f" {'cpu p50':>8} {'cpu p99':>8} {'rollouts':>9}"
    )
    for p in s["decision_time"]:
        for name, t in [("all", s["decision_time"][p]), *s["decision_time_by_size"][p].items()]:
            if t["decisions"]:
                print(
                    f"{p:<10} {name:<6} {t['decisions']:>9} {t['median_ms']:>8.2f} {t['p90_ms']:>8.2f}"
                    f" {t['p99_ms']:>8.2f} {t['max_ms']:>8.1f} {t['cpu_median_ms']:>8.2f}"
                    f" {t['cpu_p99_ms']:>8.2f} {t['mean_rollouts']:>9.0f}"
                )
    if "completion" not in s:
        return
    r, f = s["decision_time"]["mcpp"], s["decision_time"]["mcpp_full"]
    if r["decisions"] and f["decisions"]:
        print(
            f"full / racing: median x{f['median_ms'] / r['median_ms']:.1f},"
            f" p99 x{f['p99_ms'] / r['p99_ms']:.1f}, rollouts x{f['mean_rollouts'] / r['mean_rollouts']:.1f}"
        )
    print("\nCompletion probability (95% Wilson CI); racing - full paired on (DAG, cell, seed)")
    print(
        f"{'cell':<12} {'mcpp':>22} {'mcpp_full':>22}"
        f" {'racing - full (racing-only/full-only, McNemar p)':>50}"
    )
    rows = [
        *s["completion_by_cell"].items(),
        ("all", {**s["completion"], "paired_racing_minus_full": s["paired_racing_minus_full"]}),
    ]
    for cell, c in rows:
        a, b, d = c["mcpp"], c["mcpp_full"], c["paired_racing_minus_full"]
        diff = (
            f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
            f" ({d['racing_only']}/{d['full_only']}, p={d['mcnemar_p']:.2f})"
            if d.get("n")
            else "-"
        )
        print(
            f"{cell:<12} {a['p']:.3f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}] n={a['n']:<4}"
            f" {b['p']:.3f} [{b['ci95'][0]:.2f}, {b['ci95'][1]:.2f}] {diff:>50}"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
