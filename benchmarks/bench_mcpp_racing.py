"""Racing vs full M, decision by decision: how good is each one's choice on the same states?

```text
python benchmarks/bench_mcpp_racing.py                     # defaults below, 2 workers (~15 min)
python benchmarks/bench_mcpp_racing.py --limit-dags 4 --eval-rollouts 200 --jobs 1   # smoke run
```

End-to-end completion rates of two planners that differ by a point or two need
thousands of paired runs to tell apart (most runs end the same way for both). This
benchmark compares the decisions themselves instead:

1. states: every decision state of `--trajectory-policy` runs (the real executor on
   virtual time, `orchestrator.simulation.simulate`) on the pool's DAGs, in each
   (budget, deadline) cell, `--trials` seeds each;
2. decisions: every policy of `--policies` decides on every one of those states
   (CPU time of `decide` recorded);
3. values: each distinct action chosen on a state is scored by
   `policies.mcpp.action_values`: paired with all 16 Seq-(m, k) continuations,
   `--eval-rollouts` rollouts each on rollout ids none of the planners saw (an
   independent seed), value = its best continuation's completion rate. Identical
   actions get identical values, so only real differences count.

Reported per policy: mean value, and its paired difference from the reference (the
last policy, `mcpp_full` by default) with a 95% interval that treats the states of
one run as a cluster; how often the choice equals the reference's, and how often it
is worse or better by more than 0.02; decision CPU time. Writes
`benchmarks/results/mcpp_racing.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.plan import Allocation, PlanState
from policies.bench import StateCapture
from policies.dag_pool import pool_workflow, read_pool

DEV_POOL = Path(__file__).resolve().parent / "data" / "pool_dev.jsonl"
"""The DAG pool shipped with the repository (40 CodeFlow-like DAGs)."""

_DEFAULT_CELLS = "0.03:90,0.1:45,0.1:90,0.3:45"
_RunKey = tuple[int, int, float, float]  # dag, trial, budget, deadline


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Job:
    pool: str
    dag: int
    trial: int
    cells: tuple[tuple[float, float], ...]
    policy: str
    seed: int


def _run_seed(base: int, dag: int, trial: int) -> int:
    return base * 1_000_003 + dag * 1_009 + trial


def _collect(job: _Job) -> list[tuple[_RunKey, PlanState]]:
    from orchestrator.simulation import simulate
    from policies.registry import make_policy

    workflow, catalog = pool_workflow(read_pool(job.pool)[job.dag])
    seed = _run_seed(job.seed, job.dag, job.trial)
    out: list[tuple[_RunKey, PlanState]] = []
    for budget, deadline in job.cells:
        capture = StateCapture(make_policy(job.policy, seed=seed))
        simulate(workflow, catalog=catalog, policy=capture, budget_usd=budget, deadline_s=deadline, seed=seed)
        out.extend(((job.dag, job.trial, budget, deadline), s) for s in capture.states)
    return out


# Filled in the parent before the workers fork, so that states are not pickled per task.
_STATES: list[tuple[_RunKey, PlanState]] = []


def _decide(task: tuple[int, str, int]) -> tuple[Allocation, float, int]:
    from policies.registry import make_policy

    index, name, base_seed = task
    key, state = _STATES[index]
    policy = make_policy(name, seed=_run_seed(base_seed, key[0], key[1]))
    t = time.thread_time()
    action = policy.decide(state)
    cpu_ms = (time.thread_time() - t) * 1000
    return action, cpu_ms, int(action.info.get("rollouts", 0) or 0)


def _values(task: tuple[int, list[Allocation], int, int]) -> list[float]:
    from policies.mcpp import action_values

    index, actions, rollouts, seed = task
    return action_values(_STATES[index][1], actions, rollouts=rollouts, seed=seed + index)


def _action_key(action: Allocation) -> tuple[tuple[str, str, int, int | None], ...]:
    return tuple(sorted((s, a.model, a.samples, a.max_tokens) for s, a in action.assignments.items()))


def _map(fn: Any, tasks: Sequence[Any], jobs: int, label: str) -> list[Any]:
    """`fn` over `tasks` in order, with a progress line on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from policies.rollout import warm_up

    out: list[Any] = []
    with Progress(
        TextColumn(f"[bold]{label:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task(label, total=len(tasks))
        if jobs <= 1:
            for t in tasks:
                out.append(fn(t))
                bar.advance(task)
            return out
        with multiprocessing.get_context("fork").Pool(jobs, initializer=warm_up) as pool:
            for result in pool.imap(fn, tasks, chunksize=4):
                out.append(result)
                bar.advance(task)
    return out


def _paired(diff: np.ndarray, clusters: list[_RunKey]) -> dict[str, float]:
    """Mean of `diff` and a 95% interval with the states of one run as a cluster."""
    n = len(diff)
    mean = float(diff.mean()) if n else 0.0
    sums: dict[_RunKey, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for d, c in zip(diff, clusters, strict=True):
        sums[c][0] += float(d)
        sums[c][1] += 1
    var = sum((s - k * mean) ** 2 for s, k in sums.values())
    g = len(sums)
    se = math.sqrt(var * g / max(g - 1, 1)) / n if n else 0.0
    return {"mean": mean, "ci_low": mean - 1.96 * se, "ci_high": mean + 1.96 * se, "se": se}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pool", default=str(DEV_POOL), help="DAG-pool JSONL file (default: the dev pool)")
    parser.add_argument("--cells", default=_DEFAULT_CELLS, help="comma-separated BUDGET:DEADLINE cells")
    parser.add_argument("--trials", type=int, default=1, help="seeds per DAG and cell")
    parser.add_argument("--seed", type=int, default=7, help="base seed of the runs")
    parser.add_argument("--limit-dags", type=int, default=None, help="use only the first N DAGs")
    parser.add_argument("--trajectory-policy", default="mcpp", help="policy whose runs give the states")
    parser.add_argument(
        "--policies", default="mcpp,mcpp_full", help="policies to compare; the last is the reference"
    )
    parser.add_argument("--eval-rollouts", type=int, default=1000, help="rollouts per (action, continuation)")
    parser.add_argument("--eval-seed", type=int, default=987_654, help="seed of the scoring rollouts")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--out", default="benchmarks/results/mcpp_racing.json", help="JSON output")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Run the benchmark, print the table, write the JSON; 0 on success."""
    args = _parse(argv)
    cells = tuple(
        (float(c.split(":")[0]), float(c.split(":")[1])) for c in args.cells.split(",") if c.strip()
    )
    names = [p.strip() for p in args.policies.split(",") if p.strip()]
    from policies.registry import make_policy
    from policies.rollout import warm_up

    for name in names:
        make_policy(name)  # unknown names fail here, before any work
    warm_up()
    problems = read_pool(args.pool)
    n_dags = len(problems) if args.limit_dags is None else min(args.limit_dags, len(problems))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    jobs = [
        _Job(pool=args.pool, dag=d, trial=t, cells=cells, policy=args.trajectory_policy, seed=args.seed)
        for d in range(n_dags)
        for t in range(args.trials)
    ]
    _STATES.clear()
    for chunk in _map(_collect, jobs, args.jobs, "states"):
        _STATES.extend(chunk)
    decisions: dict[str, list[tuple[Allocation, float, int]]] = {}
    for name in names:
        decisions[name] = _map(_decide, [(i, name, args.seed) for i in range(len(_STATES))], args.jobs, name)
    distinct: list[list[Allocation]] = []
    slot: list[dict[str, int]] = []
    for i in range(len(_STATES)):
        keys: dict[Any, int] = {}
        actions: list[Allocation] = []
        where: dict[str, int] = {}
        for name in names:
            action = decisions[name][i][0]
            k = _action_key(action)
            if k not in keys:
                keys[k] = len(actions)
                actions.append(action)
            where[name] = keys[k]
        distinct.append(actions)
        slot.append(where)
    tasks = [(i, distinct[i], args.eval_rollouts, args.eval_seed) for i in range(len(_STATES))]
    scored = _map(_values, tasks, args.jobs, "values")
    wall = time.perf_counter() - t0
    value = {n: np.array([scored[i][slot[i][n]] for i in range(len(_STATES))]) for n in names}
    reference = names[-1]
    clusters = [key for key, _ in _STATES]
    summary: dict[str, Any] = {
        "command": "python benchmarks/bench_mcpp_racing.py " + " ".join(argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "wall_s": wall,
        "dags": n_dags,
        "cells": [list(c) for c in cells],
        "trials": args.trials,
        "states": len(_STATES),
        "runs": len(set(clusters)),
        "eval_rollouts": args.eval_rollouts,
        "reference": reference,
        "policies": {},
    }
    cell_keys = [(b, d) for b, d in cells]
    for name in names:
        diff = value[name] - value[reference]
        cpu = np.array([d[1] for d in decisions[name]])
        rollouts = np.array([d[2] for d in decisions[name]])
        same = np.array([slot[i][name] == slot[i][reference] for i in range(len(_STATES))])
        by_cell = {}
        for b, d in cell_keys:
            idx = [i for i, key in enumerate(clusters) if key[2:] == (b, d)]
            by_cell[f"{b:g}|{d:g}"] = {
                "states": len(idx),
                "mean_value": float(value[name][idx].mean()) if idx else None,
                "minus_reference": _paired(diff[idx], [clusters[i] for i in idx]),
            }
        summary["policies"][name] = {
            "mean_value": float(value[name].mean()),
            "minus_reference": _paired(diff, clusters),
            "same_choice": float(same.mean()),
            "worse_by_2pts": int((diff < -0.02).sum()),
            "better_by_2pts": int((diff > 0.02).sum()),
            "cpu_ms_median": float(np.median(cpu)),
            "cpu_ms_p99": float(np.percentile(cpu, 99)),
            "cpu_ms_max": float(cpu.max()),
            "mean_rollouts": float(rollouts.mean()),
            "by_cell": by_cell,
        }
    _print(summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    load_after = summary["machine"]["loadavg_after"][0]
    print(
        f"{len(_STATES)} states of {summary['runs']} runs in {wall:.0f}s;"
        f" load average {load_before[0]:.1f} -> {load_after:.1f}; wrote {args.out}"
    )
    return 0


def _print(s: dict[str, Any]) -> None:
    ref = s["reference"]
    print(f"\nValue of the chosen action (best-continuation completion, {s['eval_rollouts']} fresh rollouts)")
    print(
        f"{'policy':<14} {'value':>7} {'minus ' + ref:>22} {'95% CI':>20} {'same':>6} {'worse':>6}"
        f" {'better':>6} {'cpu p50':>8} {'cpu p99':>8} {'rollouts':>9}"
    )
    for name, p in s["policies"].items():
        d = p["minus_reference"]
        print(
            f"{name:<14} {p['mean_value']:>7.4f} {d['mean']:>+22.4f}"
            f" {'[' + format(d['ci_low'], '+.4f') + ', ' + format(d['ci_high'], '+.4f') + ']':>20}"
            f" {p['same_choice']:>6.0%} {p['worse_by_2pts']:>6} {p['better_by_2pts']:>6}"
            f" {p['cpu_ms_median']:>8.2f} {p['cpu_ms_p99']:>8.1f} {p['mean_rollouts']:>9.0f}"
        )
    print(f"\nBy cell (budget | deadline): value, minus {ref} [95% CI]")
    for name, p in s["policies"].items():
        if name == ref:
            continue
        for cell, c in p["by_cell"].items():
            d = c["minus_reference"]
            print(
                f"{name:<14} {cell:<10} {c['states']:>5} states {c['mean_value']:.4f}"
                f" {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
            )
    print("(worse / better: states where the choice's value is more than 0.02 below / above the reference's)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
