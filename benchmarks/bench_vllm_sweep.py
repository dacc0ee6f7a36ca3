"""Sweep the KV cache size per replica and see where the vLLM pool's targets hold.

The pool issue's targets: the prefix-aware router's hit rate is at least 95% of "the hit
rate the same request sequence gets on a single replica with enough cache" (a replica
that never evicts: the no-evict ideal), at least 1.5x round-robin's, with a load
imbalance (max/mean requests per replica) of at most 1.25. Whether they hold depends on
how large each replica's KV cache is against the workload's working set: with a small
cache every router evicts and no router reaches the no-evict ideal; with a large one
round-robin stops evicting too and catches up. This benchmark measures both sides.

It runs the workload of `bench_vllm_pool` (with its functions) for every
`--points` size of KV cache per replica (blocks of 32 tokens) on `--replicas` replicas:

* `prefix_load`, `prefix_load+nobalance` (without its share bound), `round_robin` and
  `least_loaded`, `--repeats` runs each, interleaved
  (medians reported), hit rate from vLLM's own counters
  (`vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total` deltas);
* `prefix_load`'s load imbalance;
* the same-total-cache reference: one replica with `replicas x points` blocks
  (`--reference-repeats` runs);

and once, since it does not depend on the pool's cache: the no-evict ideal, one replica
with `--unbounded-kv-blocks` blocks. A single-replica reference whose size equals a pool
point runs on the first replica of that pool (the other one idles), which saves a vLLM
start-up; every replica size is started once, in increasing order.

Usage (starts and stops its own replicas; about 17 minutes on 2 shared cores):

    .venv/bin/python benchmarks/bench_vllm_sweep.py

Writes `benchmarks/results/vllm_sweep.json` and `docs/vllm_pool_sweep.png`, prints a
table. More points can be measured later (to their own JSON) and merged with earlier
sweeps into one table and chart, measuring nothing again; e.g. (one line each):

    .venv/bin/python benchmarks/bench_vllm_sweep.py --points 450,550
        --out benchmarks/results/vllm_sweep_fine.json --chart /tmp/fine.png
    .venv/bin/python benchmarks/bench_vllm_sweep.py --replot
        benchmarks/results/vllm_sweep.json benchmarks/results/vllm_sweep_fine.json

Refuses to start while another vLLM server runs on the machine (two benchmarks at
once on 2 cores would measure each other); `--wait-for-others-s` waits for it instead.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_vllm_pool import (  # noqa: E402
    RunResult,
    RunSettings,
    Step,
    Words,
    build_workload,
    median_run,
    run_routers,
)
from orchestrator.pool import RouterConfig  # noqa: E402
from scripts.build_tiny_model import ensure_tiny_model  # noqa: E402
from scripts.vllm_replicas import ReplicaOptions, VLLMReplicas, default_venv  # noqa: E402

__all__ = ["SweepPoint", "Targets", "main"]

NOBALANCE = "prefix_load+nobalance"
ROUTERS = ("prefix_load", NOBALANCE, "round_robin", "least_loaded")
"""Routers measured at every point: the default, the default without its share bound,
and two baselines."""
BLOCK_TOKENS = 32
"""KV block size of the replicas (vLLM CPU 0.32 needs a multiple of 32)."""
NO_EVICT = "no-evict"
SAME_TOTAL = "same-total"


@dataclass(frozen=True, kw_only=True)
class Targets:
    """The pool issue's targets for the prefix-aware router."""

    min_vs_ideal: float = 0.95
    """Hit rate over the no-evict single-replica ideal."""
    min_vs_round_robin: float = 1.5
    """Hit rate over round-robin's."""
    max_imbalance: float = 1.25
    """Max/mean requests per replica."""


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """Medians at one KV cache size per replica."""

    kv_blocks_per_replica: int
    """KV blocks (of `BLOCK_TOKENS` tokens) in each replica."""
    hit_rates: dict[str, float]
    """Median hit rate per router (vLLM's counters)."""
    runs: dict[str, list[float]]
    """Every run's hit rate per router, in order."""
    imbalance: dict[str, float]
    """Median load imbalance per router."""
    same_total_hit_rate: float
    """One replica with the pool's total cache (`replicas x kv_blocks_per_replica`)."""
    same_total_runs: list[float]
    """Every run of that reference."""
    vs_ideal: float
    """`prefix_load` over the no-evict ideal."""
    vs_same_total: float
    """`prefix_load` over the same-total reference."""
    vs_round_robin: float
    """`prefix_load` over `round_robin`."""
    meets_ideal: bool
    """`vs_ideal >= Targets.min_vs_ideal`."""
    meets_round_robin: bool
    """`vs_round_robin >= Targets.min_vs_round_robin`."""
    meets_imbalance: bool
    """`prefix_load`'s imbalance `<= Targets.max_imbalance`."""
    imbalance_runs: dict[str, list[float]] = field(default_factory=dict)
    """Every run's load imbalance per router, in order (empty in sweeps that predate it)."""

    @property
    def all_met(self) -> bool:
        """All three targets hold at this point."""
        return self.meets_ideal and self.meets_round_robin and self.meets_imbalance


# -- measuring --------------------------------------------------------------------------


def _foreign_vllm() -> list[int]:
    """Process ids of vLLM servers running on this machine (started by anyone)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"vllm.entrypoints" in cmdline:
            pids.append(int(entry.name))
    return pids


def _wait_for_others(wait_s: float) -> bool:
    """Wait until no vLLM server runs, up to `wait_s` seconds; whether the machine is free."""
    deadline = time.monotonic() + wait_s
    while pids := _foreign_vllm():
        if time.monotonic() >= deadline:
            print(
                f"vLLM servers already running (pids {pids}); two benchmarks at once would measure"
                " each other. Wait for them to stop, or pass `--wait-for-others-s`.",
                file=sys.stderr,
            )
            return False
        print(f"waiting for other vLLM servers to stop (pids {pids})", flush=True)
        time.sleep(30)
    return True


def _sessions(points: list[int], replicas: int, unbounded: int) -> dict[int, tuple[int, list[str]]]:
    """Per replica size (blocks): how many replicas to start and what to run there.

    A job is `"pool"` (the routers on all replicas), `SAME_TOTAL` or `NO_EVICT` (one replica).
    """
    jobs: dict[int, list[str]] = {}
    for n in points:
        jobs.setdefault(n, []).append("pool")
        jobs.setdefault(replicas * n, []).append(SAME_TOTAL)
    jobs.setdefault(unbounded, []).append(NO_EVICT)
    return {size: (replicas if "pool" in todo else 1, todo) for size, todo in sorted(jobs.items())}


def _measure(
    args: argparse.Namespace, chains: list[list[Step]], settings: RunSettings
) -> tuple[dict[int, dict[str, list[RunResult]]], dict[int, list[RunResult]], list[RunResult]]:
    """Start each replica size once and run its jobs.

    Returns the pool runs per point (per router), the same-total runs per total size,
    and the no-evict runs.
    """
    pool_runs: dict[int, dict[str, list[RunResult]]] = {}
    same_total: dict[int, list[RunResult]] = {}
    no_evict: list[RunResult] = []
    started = time.monotonic()
    for size, (count, jobs) in _sessions(args.points, args.replicas, args.unbounded_kv_blocks).items():
        options = ReplicaOptions(kv_blocks=size, block_size=BLOCK_TOKENS, max_model_len=4096)
        with VLLMReplicas(count, options=options) as replicas:
            urls = replicas.urls
            print(
                f"[{time.monotonic() - started:6.0f}s] {count} replica(s) x {size} KV blocks:"
                f" {', '.join(jobs)}",
                flush=True,
            )
            if "pool" in jobs:
                pool_runs[size] = asyncio.run(
                    run_routers(urls, chains, list(ROUTERS), args.repeats, settings)
                )
            for job in (j for j in jobs if j != "pool"):
                label = f"{job} {size}"
                runs = asyncio.run(run_routers(urls[:1], chains, [label], args.reference_repeats, settings))
                if job == SAME_TOTAL:
                    same_total[size] = runs[label]
                else:
                    no_evict = runs[label]
    print(f"[{time.monotonic() - started:6.0f}s] all replicas stopped", flush=True)
    return pool_runs, same_total, no_evict


def _points(
    pool_runs: dict[int, dict[str, list[RunResult]]],
    same_total: dict[int, list[RunResult]],
    ideal: float,
    replicas: int,
    targets: Targets,
) -> list[SweepPoint]:
    out: list[SweepPoint] = []
    for size, by_router in sorted(pool_runs.items()):
        medians = {router: median_run(runs) for router, runs in by_router.items()}
        rates = {router: m.hit_rate for router, m in medians.items()}
        reference = same_total[replicas * size]
        reference_rate = statistics.median(r.hit_rate for r in reference)
        aware, rr = rates["prefix_load"], rates["round_robin"]
        imbalance = {router: m.load_imbalance for router, m in medians.items()}
        vs_ideal = aware / ideal if ideal else 0.0
        vs_rr = aware / rr if rr else float("inf")
        out.append(
            SweepPoint(
                kv_blocks_per_replica=size,
                hit_rates=rates,
                runs={router: [r.hit_rate for r in runs] for router, runs in by_router.items()},
                imbalance=imbalance,
                same_total_hit_rate=reference_rate,
                same_total_runs=[r.hit_rate for r in reference],
                vs_ideal=vs_ideal,
                vs_same_total=aware / reference_rate if reference_rate else 0.0,
                vs_round_robin=vs_rr,
                meets_ideal=vs_ideal >= targets.min_vs_ideal,
                meets_round_robin=vs_rr >= targets.min_vs_round_robin,
                meets_imbalance=imbalance["prefix_load"] <= targets.max_imbalance,
                imbalance_runs={
                    router: [r.load_imbalance for r in runs] for router, runs in by_router.items()
                },
            )
        )
    return out


# -- reporting --------------------------------------------------------------------------


def _table(points: list[SweepPoint], ideal: float, replicas: int) -> str:
    head = (
        f"{'KV/replica':>10} {'prefix_load':>11} {'(runs)':>11} {'round_robin':>11}"
        f" {'least_loaded':>12} {'imbal':>5} {'nobalance':>9} {'imbal':>5}"
        f" {'same-total':>10} {'/no-evict':>9} {'/same-total':>11}"
        f" {'x RR':>5}  targets"
    )
    lines = [head, "-" * len(head)]
    for p in points:
        verdict = (
            "ALL MET"
            if p.all_met
            else "missed: "
            + ", ".join(
                name
                for name, ok in (
                    ("ideal", p.meets_ideal),
                    ("1.5x RR", p.meets_round_robin),
                    ("imbalance", p.meets_imbalance),
                )
                if not ok
            )
        )
        lines.append(
            f"{p.kv_blocks_per_replica:>10} {p.hit_rates['prefix_load']:>11.1%}"
            f" {_spread(p.runs['prefix_load']):>11}"
            f" {p.hit_rates['round_robin']:>11.1%} {p.hit_rates['least_loaded']:>12.1%}"
            f" {p.imbalance['prefix_load']:>5.2f} {_cell(p.hit_rates, NOBALANCE, '.1%'):>9}"
            f" {_cell(p.imbalance, NOBALANCE, '.2f'):>5} {p.same_total_hit_rate:>10.1%}"
            f" {p.vs_ideal:>9.1%} {p.vs_same_total:>11.1%} {p.vs_round_robin:>5.2f}  {verdict}"
        )
    lines.append(f"no-evict ideal (1 replica, never evicts): {ideal:.1%}")
    lines.append(
        f"same-total: 1 replica with {replicas} x KV/replica blocks; imbal: prefix_load's, then"
        " that of prefix_load without its share bound (nobalance)"
    )
    return "\n".join(lines)


def _cell(values: dict[str, float], router: str, spec: str) -> str:
    """`values[router]` formatted with `spec`, or "-" when the router did not run."""
    return format(values[router], spec) if router in values else "-"


def _spread(runs: list[float]) -> str:
    return f"{min(runs):.1%}-{max(runs):.1%}".replace("%-", "-") if len(runs) > 1 else "-"


def _region(points: list[SweepPoint]) -> str:
    met = [p.kv_blocks_per_replica for p in points if p.all_met]
    if not met:
        return "no measured cache size meets all three targets"
    return f"all three targets met at {', '.join(str(n) for n in met)} KV blocks per replica"


def _chart(points: list[SweepPoint], ideal: float, targets: Targets, replicas: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p.kv_blocks_per_replica for p in points]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    # Shade each point where all targets hold, out to halfway to its neighbours.
    edges = [xs[0] - (xs[1] - xs[0]) / 2 if len(xs) > 1 else xs[0] - 50]
    edges += [(a + b) / 2 for a, b in itertools.pairwise(xs)]
    edges += [xs[-1] + (xs[-1] - xs[-2]) / 2 if len(xs) > 1 else xs[-1] + 50]
    for axis in (top, bottom):
        for i, p in enumerate(points):
            if p.all_met:
                axis.axvspan(edges[i], edges[i + 1], color="tab:green", alpha=0.15, lw=0)
    styles = {
        "prefix_load": ("tab:blue", "o"),
        "round_robin": ("tab:red", "s"),
        "least_loaded": ("tab:orange", "^"),
    }
    for router, (color, marker) in styles.items():
        rates = [p.hit_rates[router] for p in points]
        # Error bars: the spread (min..max) of the repeats around the median.
        low = [rate - min(p.runs[router], default=rate) for rate, p in zip(rates, points, strict=True)]
        high = [max(p.runs[router], default=rate) - rate for rate, p in zip(rates, points, strict=True)]
        top.errorbar(
            xs,
            rates,
            yerr=[low, high],
            marker=marker,
            color=color,
            capsize=3,
            label=f"{router} (median, min-max)",
        )
    top.plot(
        xs,
        [p.same_total_hit_rate for p in points],
        ls=":",
        marker=".",
        color="tab:gray",
        label="1 replica, same total cache",
    )
    top.axhline(ideal, color="black", lw=1.2, label=f"no-evict ideal ({ideal:.1%})")
    top.axhline(
        targets.min_vs_ideal * ideal,
        color="black",
        ls="--",
        lw=0.8,
        label=f"{targets.min_vs_ideal:.0%} of the ideal",
    )
    met = [p for p in points if p.all_met]
    if met:
        top.scatter(
            [p.kv_blocks_per_replica for p in met],
            [p.hit_rates["prefix_load"] for p in met],
            s=160,
            facecolors="none",
            edgecolors="tab:green",
            lw=2,
            zorder=5,
            label="all targets met (shaded)",
        )
    top.set_ylabel("prefix-cache hit rate (vLLM counters)")
    top.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    top.set_title(f"vLLM pool, {replicas} replicas: hit rate vs KV cache per replica")
    top.legend(fontsize=8, loc="lower right")
    top.grid(alpha=0.3)

    bottom.plot(
        xs, [p.vs_ideal for p in points], marker="o", color="tab:blue", label="prefix_load / no-evict ideal"
    )
    bottom.axhline(targets.min_vs_ideal, color="tab:blue", ls="--", lw=0.8)
    bottom.plot(
        xs, [p.vs_round_robin for p in points], marker="s", color="tab:red", label="prefix_load / round_robin"
    )
    bottom.axhline(targets.min_vs_round_robin, color="tab:red", ls="--", lw=0.8)
    bottom.plot(
        xs,
        [p.imbalance["prefix_load"] for p in points],
        marker="^",
        color="tab:purple",
        label="prefix_load imbalance",
    )
    bottom.axhline(targets.max_imbalance, color="tab:purple", ls="--", lw=0.8)
    bottom.set_xlabel(
        f"KV blocks per replica ({BLOCK_TOKENS} tokens each)\ngreen: measured points where all"
        " targets hold, shaded out to halfway to the neighbouring points"
    )
    bottom.set_ylabel("ratio (dashed: target)")
    bottom.set_xticks(xs)
    bottom.legend(fontsize=8, loc="upper right")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    vllm = sorted(
        p.name.removesuffix(".dist-info")
        for p in default_venv().glob("lib/python*/site-packages/vllm*.dist-info")
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "vllm": vllm,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _replot(paths: list[Path], chart: Path) -> int:
    """Merge the points of several sweeps (later files win on equal sizes) into one chart."""
    merged: dict[int, SweepPoint] = {}
    ideals: list[float] = []
    replicas: set[int] = set()
    scales: set[float] = set()
    names = {f.name for f in fields(SweepPoint)}
    for path in paths:
        payload = json.loads(path.read_text())
        ideals.append(payload["no_evict_ideal"]["hit_rate"])
        replicas.add(payload["config"]["replicas"])
        # Sweeps from before `--load-scale` existed ran with the then default, 8.
        scales.add(payload["config"].get("load_scale", 8.0))
        for raw in payload["points"]:
            point = SweepPoint(**{k: v for k, v in raw.items() if k in names})
            merged[point.kv_blocks_per_replica] = point
    if max(ideals) - min(ideals) > 0.005 or len(replicas) != 1 or len(scales) != 1:
        print(
            f"the sweeps do not share a workload: no-evict ideals {ideals}, replicas {sorted(replicas)},"
            f" load scales {sorted(scales)}; rerun them with the same options",
            file=sys.stderr,
        )
        return 2
    points = [merged[k] for k in sorted(merged)]
    count = replicas.pop()
    print(_table(points, ideals[0], count))
    print(_region(points))
    _chart(points, ideals[0], Targets(), count, chart)
    print(f"wrote {chart}")
    return 0


# -- driver -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; returns the exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--points",
        type=lambda s: sorted({int(x) for x in s.split(",")}),
        default=[300, 400, 500, 600, 800],
        help="KV blocks per replica, comma-separated",
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs per router and point (medians)")
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="runs of each single-replica reference"
    )
    parser.add_argument("--unbounded-kv-blocks", type=int, default=8192, help="the no-evict replica")
    parser.add_argument("--roles", type=int, default=10)
    parser.add_argument("--workflows", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--load-scale", type=float, default=RouterConfig().load_scale, help="`RouterConfig.load_scale`"
    )
    parser.add_argument("--wait-for-others-s", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vllm_sweep.json")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "vllm_pool_sweep.png")
    parser.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="measure nothing: merge the points of these result files into one table and `--chart`",
    )
    args = parser.parse_args(argv)
    if args.replot:
        return _replot(args.replot, args.chart)
    if not _wait_for_others(args.wait_for_others_s):
        return 2
    load_before = os.getloadavg()
    started = time.monotonic()
    targets = Targets()

    words = Words(ensure_tiny_model() / "tokenizer.json", seed=args.seed)
    chains, chars_per_token = build_workload(
        words, roles=args.roles, workflows=args.workflows, steps=args.steps, seed=args.seed
    )
    n_requests = sum(len(c) for c in chains)
    print(
        f"workload: {args.workflows} workflows x {args.steps} steps = {n_requests} requests,"
        f" {args.roles} roles, {args.concurrency} at once; KV blocks per replica: {args.points}",
        flush=True,
    )
    settings = RunSettings(
        chars_per_token=chars_per_token,
        output_tokens=args.output_tokens,
        seed=args.seed,
        concurrency=args.concurrency,
        load_scale=args.load_scale,
        warm_max_load=0,
    )
    pool_runs, same_total, no_evict_runs = _measure(args, chains, settings)
    no_evict = median_run(no_evict_runs)
    ideal = no_evict.hit_rate
    points = _points(pool_runs, same_total, ideal, args.replicas, targets)
    table = _table(points, ideal, args.replicas)
    region = _region(points)
    print()
    print(table)
    print(region)
    _chart(points, ideal, targets, args.replicas, args.chart)
    payload = {
        "command": " ".join(
            ["python benchmarks/bench_vllm_sweep.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "config": {
            "points_kv_blocks_per_replica": args.points,
            "kv_block_tokens": BLOCK_TOKENS,
            "replicas": args.replicas,
            "repeats": args.repeats,
            "reference_repeats": args.reference_repeats,
            "unbounded_kv_blocks": args.unbounded_kv_blocks,
            "workflows": args.workflows,
            "steps": args.steps,
            "requests": n_requests,
            "roles": args.roles,
            "concurrency": args.concurrency,
            "output_tokens": args.output_tokens,
            "seed": args.seed,
            "load_scale": args.load_scale,
            "chars_per_token": round(chars_per_token, 3),
        },
        "targets": asdict(targets),
        "no_evict_ideal": {
            "hit_rate": ideal,
            "runs": [r.hit_rate for r in no_evict_runs],
            "computed_prompt_tokens": no_evict.computed_prompt_tokens,
            # Every distinct prompt block is computed exactly once when nothing is evicted.
            "distinct_prompt_blocks": round(no_evict.computed_prompt_tokens / BLOCK_TOKENS),
        },
        "points": [{**asdict(p), "all_met": p.all_met} for p in points],
        "region": region,
        "details": {
            str(size): {router: asdict(median_run(runs)) for router, runs in by_router.items()}
            for size, by_router in sorted(pool_runs.items())
        },
        "machine": _machine(load_before),
        "wall_s": round(time.monotonic() - started, 1),
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out} and {args.chart} in {payload['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
