"""Decision time on big DAGs: MCPP (horizon planning) and the baselines on the same states.

```text
python benchmarks/bench_mcpp_scale.py                                  # 100, 500, 2,000 subtasks
python benchmarks/bench_mcpp_scale.py --sizes 100,500,2000,5000 --states 150
python benchmarks/bench_mcpp_scale.py --write-pool layered200.jsonl --pool-subtasks 200 --pool-dags 10
```

(The last writes seeded layered DAGs as a DAG pool, for completion runs with
`benchmarks/bench_planners.py --pool layered200.jsonl`, and times nothing.)

For every size, a seeded layered random DAG (`policies.synthetic.layered_problem`:
layers of 1-15 subtasks, 1-3 parents each, 2 of 4 models per subtask, 12 recorded
attempts per pair) with a budget of 2x and a deadline of 1.5x its cheap needs
(`layered_limits`). One run of the real executor on virtual time (`simulate`) with
`mcpp` records the states it visits and, for every decision, the executor's own
`decide_ms` (the "in-run" rows; the first decision compiles the run's estimates).
Then every policy decides on the same `--states` states spread evenly over that run,
in run order, with a fresh policy per size (the "same states" rows): median, p90,
p99 and max of wall time, and CPU time (`time.thread_time`) beside it, because these
machines are shared and wall time measures the neighbours too. `mcpp_whole` (MCPP
planning the whole DAG, as before the horizon) is timed on a few states of the
smaller sizes, for the ratio. The load average (`os.getloadavg`) before and after
each size is part of the output.

Writes `benchmarks/results/mcpp_scale.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.plan import PlanState, Policy
from policies.bench import StateCapture
from policies.dag_pool import pool_workflow, write_pool
from policies.mcpp import MCPP, MCPPConfig
from policies.registry import make_policy
from policies.synthetic import layered_limits, layered_problem

_BASELINES = (
    "always_cheapest",
    "always_strongest",
    "threshold_router",
    "dual_mirror_descent",
    "split_uniform",
    "split_critical_path",
    "fixed:4B_ins:4",
)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,2000", help="comma-separated DAG sizes (subtasks)")
    parser.add_argument("--states", type=int, default=120, help="states per size every policy decides on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the DAGs and the runs")
    parser.add_argument("--budget-factor", type=float, default=2.0, help="budget = this x the cheap needs")
    parser.add_argument("--deadline-factor", type=float, default=1.5, help="deadline = this x the cheap path")
    parser.add_argument("--whole-states", type=int, default=8, help="states for `mcpp_whole` (0: skip it)")
    parser.add_argument("--whole-max", type=int, default=500, help="largest size `mcpp_whole` is timed on")
    parser.add_argument("--out", default="benchmarks/results/mcpp_scale.json", help="JSON output")
    parser.add_argument("--write-pool", default=None, help="only write layered DAGs as a pool JSONL here")
    parser.add_argument("--pool-subtasks", type=int, default=200, help="subtasks per DAG of --write-pool")
    parser.add_argument("--pool-dags", type=int, default=10, help="DAGs of --write-pool (seeds 0, 1, ...)")
    return parser.parse_args(list(argv))


def _stats(wall_ms: list[float], cpu_ms: list[float]) -> dict[str, Any]:
    w, c = np.array(wall_ms), np.array(cpu_ms)
    return {
        "decisions": len(w),
        "median_ms": float(np.median(w)),
        "p90_ms": float(np.percentile(w, 90)),
        "p99_ms": float(np.percentile(w, 99)),
        "max_ms": float(w.max()),
        "cpu_median_ms": float(np.median(c)),
        "cpu_p99_ms": float(np.percentile(c, 99)),
        "cpu_max_ms": float(c.max()),
    }


def _time(policy: Policy, states: Sequence[PlanState]) -> tuple[list[float], list[float], list[int]]:
    wall, cpu, rollouts = [], [], []
    for state in states:
        t, c = time.perf_counter(), time.thread_time()
        alloc = policy.decide(state)
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - t) * 1000)
        rollouts.append(int(alloc.info.get("rollouts", 0) or 0))
    return wall, cpu, rollouts


def _size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator.simulation import simulate

    load_before = os.getloadavg()
    problem = layered_problem(n, seed=args.seed)
    workflow, catalog = pool_workflow(problem)
    budget, deadline = layered_limits(
        problem, budget_factor=args.budget_factor, deadline_factor=args.deadline_factor
    )
    capture = StateCapture(make_policy("mcpp", seed=args.seed))
    t = time.perf_counter()
    result = simulate(
        workflow, catalog=catalog, policy=capture, budget_usd=budget, deadline_s=deadline, seed=args.seed
    )
    run_s = time.perf_counter() - t
    in_run = [d.decide_ms for d in result.decisions]
    picks = np.unique(
        np.linspace(0, len(capture.states) - 1, min(args.states, len(capture.states))).astype(int)
    )
    states = [capture.states[i] for i in picks]
    out: dict[str, Any] = {
        "subtasks": n,
        "budget_usd": budget,
        "deadline_s": deadline,
        "mcpp_run": {
            "outcome": str(result.outcome),
            "spent_usd": float(result.spent_usd),
            "makespan_s": result.makespan_s,
            "wall_s": run_s,
            "first_decision_ms": in_run[0],
            **_stats(in_run, in_run),
        },
        "states": len(states),
        "same_states": {},
    }
    del out["mcpp_run"]["cpu_median_ms"], out["mcpp_run"]["cpu_p99_ms"], out["mcpp_run"]["cpu_max_ms"]
    names = ["mcpp", *_BASELINES]
    for name in names:
        wall, cpu, rollouts = _time(make_policy(name, seed=args.seed), states)
        out["same_states"][name] = {
            **_stats(wall, cpu),
            "first_ms": wall[0],
            "mean_rollouts": float(np.mean(rollouts)),
        }
    if args.whole_states > 0 and n <= args.whole_max:
        few = [states[i] for i in np.linspace(0, len(states) - 1, args.whole_states).astype(int)]
        whole = MCPP(config=MCPPConfig(seed=args.seed, horizon=None), name="mcpp_whole")
        wall, cpu, rollouts = _time(whole, few)
        _, fast_cpu, _ = _time(make_policy("mcpp", seed=args.seed), few)
        out["same_states"]["mcpp_whole"] = {
            **_stats(wall, cpu),
            "first_ms": wall[0],
            "mean_rollouts": float(np.mean(rollouts)),
        }
        out["whole_vs_horizon_same_states"] = {
            "states": len(few),
            "cpu_median_ratio": float(np.median(cpu) / max(np.median(fast_cpu), 1e-9)),
        }
    out["loadavg_before"] = load_before
    out["loadavg_after"] = os.getloadavg()
    return out


def main(argv: Sequence[str]) -> int:
    """Run the benchmark, print the tables, write the JSON; 0 on success."""
    args = _parse(argv)
    if args.write_pool:
        write_pool(
            args.write_pool, (layered_problem(args.pool_subtasks, seed=s) for s in range(args.pool_dags))
        )
        print(f"wrote {args.pool_dags} DAGs of {args.pool_subtasks} subtasks to {args.write_pool}")
        return 0
    from policies.rollout import warm_up

    warm_up()  # compile (or load) the kernel before anything is timed
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    t0 = time.perf_counter()
    results = []
    for n in sizes:
        print(f"{n} subtasks ...", file=sys.stderr, flush=True)
        results.append(_size(n, args))
    summary = {
        "command": "python benchmarks/bench_mcpp_scale.py " + " ".join(argv),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "wall_s": time.perf_counter() - t0,
        "sizes": results,
    }
    _print(summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


def _print(s: dict[str, Any]) -> None:
    print("\nDecision time, ms (wall; CPU beside it). `in-run`: every decision of the mcpp run as the")
    print("executor recorded it; the other rows: each policy on the same states of that run.")
    print(
        f"{'subtasks':>8} {'policy':<22} {'n':>5} {'median':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        f" {'cpu p50':>8} {'cpu p99':>8} {'first':>8} {'load':>10}"
    )
    for size in s["sizes"]:
        load = f"{size['loadavg_before'][0]:.1f}->{size['loadavg_after'][0]:.1f}"
        r = size["mcpp_run"]
        print(
            f"{size['subtasks']:>8} {'mcpp (in-run)':<22} {r['decisions']:>5} {r['median_ms']:>8.1f}"
            f" {r['p90_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {'':>8} {'':>8}"
            f" {r['first_decision_ms']:>8.1f} {load:>10}"
        )
        for name, t in size["same_states"].items():
            print(
                f"{size['subtasks']:>8} {name:<22} {t['decisions']:>5} {t['median_ms']:>8.1f}"
                f" {t['p90_ms']:>8.1f} {t['p99_ms']:>8.1f} {t['max_ms']:>8.1f} {t['cpu_median_ms']:>8.1f}"
                f" {t['cpu_p99_ms']:>8.1f} {t['first_ms']:>8.1f}"
            )
        print(
            f"{'':>8} mcpp run: {r['outcome']}, spent ${r['spent_usd']:.3f} of ${size['budget_usd']:.3f},"
            f" makespan {r['makespan_s']:.0f}s of {size['deadline_s']:.0f}s, {r['wall_s']:.0f}s of wall"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
