"""Executor overhead: what budgetflow costs per attempt when the model costs nothing.

```
.venv/bin/python benchmarks/bench_executor.py [--quick] [--out benchmarks/results/executor.json]
```

Three measurements, on one pinned core, each repeated and reported as the median:

1. **Dispatch cost.** Layered fan-out/fan-in DAGs of 10, 100 and 1,000 subtasks
   (a join node, then ~sqrt(n) parallel workers, then the next join, ...) run
   through `arun` with the in-memory recorder and ledger, policy
   `always_cheapest`, and an `InstantClient`. The whole wall time of `arun`
   divided by the attempts made is the cost per attempt; nothing is
   subtracted. One extra run of the largest DAG is profiled with cProfile.
2. **Concurrency.** `in_flight` calls held open at once by a gated
   `InstantClient` (each call waits until the last one has started): one
   subtask with k samples (at most 64, the executor's bound on a batch), and
   one root fanning out to k subtasks.
   Reported: time until all are in flight, total time, and memory per call
   in flight (tracemalloc and RSS deltas at that moment, over the count).
3. **LangGraph reference.** The same shapes as a `StateGraph`, each node
   awaiting the same instant call (no budget, ledger or records), run with
   `ainvoke` in the same repetition as the budgetflow run, so their ratio is
   measured side by side.

Targets (from the issue): <= 200 us per attempt, >= 5,000 attempts/s on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import json
import math
import multiprocessing
import operator
import os
import platform
import pstats
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from rich.console import Console
from rich.table import Table

from agents import LLMAgent
from benchmarks._instant_client import InstantClient, instant_catalog, instant_request
from benchmarks._pinning import one_core
from budgetflow import arun
from orchestrator._repair import MAX_SAMPLES_PER_BATCH
from orchestrator.catalog import Catalog
from orchestrator.model_client import CallProgress, ChatRequest
from orchestrator.records import Outcome
from orchestrator.workflow import Workflow
from policies.baselines import AlwaysCheapest

__all__ = ["BenchConfig", "BenchmarkFailed", "Shape", "fan_shape", "main", "run_benchmark"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "executor.json"
TARGET_US_PER_ATTEMPT = 200.0
TARGET_ATTEMPTS_PER_S = 5_000.0
_BUDGET_USD = 100_000
_MODELS = ("cheap", "strong")


class BenchmarkFailed(Exception):
    """A measured run did not do what the benchmark needs (so its numbers would mean nothing)."""


Shape = list[tuple[str, tuple[str, ...]]]
"""Subtask names in topological order, each with its parents."""
ConcurrencyMode = Literal["samples", "fanout"]


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to measure."""

    sizes: tuple[int, ...]
    """DAG sizes (subtasks) for the dispatch and LangGraph measurements."""
    reps: int
    """Repetitions of each measurement (the median is reported)."""
    in_flight: int
    """Calls held in flight at once in the concurrency measurement."""
    concurrency_reps: int
    """Repetitions of each concurrency measurement."""
    profile_size: int
    """DAG size profiled with cProfile (0: no profile)."""
    seed: int = 0
    """Seed of every run."""


FULL = BenchConfig(sizes=(10, 100, 1000), reps=5, in_flight=10_000, concurrency_reps=3, profile_size=1000)
QUICK = BenchConfig(sizes=(10, 100), reps=3, in_flight=1_000, concurrency_reps=2, profile_size=100)


# ---- shapes -------------------------------------------------------------------------------------


def fan_shape(n: int) -> Shape:
    """A layered fan-out/fan-in DAG of exactly `n` subtasks.

    `j0` fans out to ~sqrt(n) workers `w1_*`, which fan in to `j1`, which fans
    out again, ... until `n` subtasks exist (the last layer may be narrower,
    and the DAG may end on workers).
    """
    if n < 1:
        raise ValueError(f"a DAG needs at least one subtask, got n={n}")
    width = max(1, round(math.sqrt(n)))
    shape: Shape = [("j0", ())]
    join = "j0"
    layer = 0
    while len(shape) < n:
        layer += 1
        workers = [f"w{layer}_{i}" for i in range(min(width, n - len(shape)))]
        shape.extend((w, (join,)) for w in workers)
        if len(shape) < n:
            join = f"j{layer}"
            shape.append((join, tuple(workers)))
    return shape


def star_shape(n: int) -> Shape:
    """One root fanning out to `n` leaves (`n + 1` subtasks)."""
    return [("root", ()), *((f"leaf{i}", ("root",)) for i in range(n))]


def build_workflow(shape: Shape, name: str) -> Workflow:
    """The shape as a budgetflow workflow of `LLMAgent`s (one call per attempt)."""
    wf = Workflow(name)
    agent = LLMAgent(prompt="Do the step.")
    for node, parents in shape:
        wf.subtask(node, agent, models=_MODELS, after=parents)
    return wf


class _GraphState(TypedDict):
    count: Annotated[int, operator.add]


def build_langgraph(shape: Shape, client: InstantClient, request: ChatRequest) -> Any:
    """The shape as a compiled LangGraph `StateGraph`; each node awaits one instant call."""
    from langgraph.graph import END, START, StateGraph

    async def node(state: _GraphState) -> dict[str, int]:
        await client.complete(request, CallProgress())
        return {"count": 1}

    graph = StateGraph(_GraphState)
    has_children: set[str] = set()
    for name, _ in shape:
        graph.add_node(name, node)
    for name, parents in shape:
        has_children.update(parents)
        if not parents:
            graph.add_edge(START, name)
        elif len(parents) == 1:
            graph.add_edge(parents[0], name)
        else:
            graph.add_edge(list(parents), name)  # waits for all parents
    for name, _ in shape:
        if name not in has_children:
            graph.add_edge(name, END)
    return graph.compile()


# ---- one measured run ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Timed:
    wall_s: float
    units: int


def _timed_run(factory: Callable[[], Awaitable[int]]) -> _Timed:
    """Run `factory()` on a fresh event loop; time only the awaited coroutine."""

    async def go() -> _Timed:
        t0 = time.perf_counter()
        units = await factory()
        return _Timed(wall_s=time.perf_counter() - t0, units=units)

    gc.collect()
    return asyncio.run(go())


async def _budgetflow_run(workflow: Workflow, catalog: Catalog, client: InstantClient, seed: int) -> int:
    result = await arun(
        workflow, catalog=catalog, budget_usd=_BUDGET_USD, policy=AlwaysCheapest(), client=client, seed=seed
    )
    if result.outcome is not Outcome.COMPLETED:
        raise BenchmarkFailed(f"benchmark run ended `{result.outcome}`: {result.run.reason}")
    return len(result.attempts)


async def _langgraph_run(graph: Any, n: int) -> int:
    state = await graph.ainvoke({"count": 0}, config={"recursion_limit": 10 * n + 100})
    count = int(state["count"])
    if count != n:
        raise BenchmarkFailed(f"the LangGraph reference ran {count} nodes, expected {n}")
    return count


def _summary(runs: Sequence[_Timed], unit: str) -> dict[str, Any]:
    per_unit_us = [r.wall_s / r.units * 1e6 for r in runs]
    per_s = [r.units / r.wall_s for r in runs]
    return {
        unit: runs[0].units,
        f"us_per_{unit[:-1]}": statistics.median(per_unit_us),
        f"{unit}_per_s": statistics.median(per_s),
        "wall_s_median": statistics.median(r.wall_s for r in runs),
        "wall_s_all": [round(r.wall_s, 6) for r in runs],
    }


def measure_dispatch(n: int, reps: int, seed: int) -> dict[str, Any]:
    """Budgetflow and LangGraph on the same `n`-subtask DAG, interleaved, `reps` times each."""
    shape = fan_shape(n)
    catalog = instant_catalog()
    request = instant_request(catalog)
    ours: list[_Timed] = []
    theirs: list[_Timed] = []
    compile_s: list[float] = []
    for _ in range(reps):
        workflow = build_workflow(shape, f"fan{n}")
        ours.append(_timed_run(functools.partial(_budgetflow_run, workflow, catalog, InstantClient(), seed)))
        t0 = time.perf_counter()
        graph = build_langgraph(shape, InstantClient(), request)
        compile_s.append(time.perf_counter() - t0)
        theirs.append(_timed_run(functools.partial(_langgraph_run, graph, n)))
    bf = _summary(ours, "attempts")
    lg = {**_summary(theirs, "nodes"), "build_and_compile_s_median": statistics.median(compile_s)}
    ratios = [o.wall_s / o.units / (t.wall_s / t.units) for o, t in zip(ours, theirs, strict=True)]
    return {
        "subtasks": n,
        "joins": sum(1 for name, _ in shape if name.startswith("j")),
        "reps": reps,
        "budgetflow": bf,
        "langgraph": lg,
        "ratio_budgetflow_over_langgraph": statistics.median(ratios),
        "meets_targets": bf["us_per_attempt"] <= TARGET_US_PER_ATTEMPT
        and bf["attempts_per_s"] >= TARGET_ATTEMPTS_PER_S,
    }


# ---- concurrency ---------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _concurrency_once(mode: ConcurrencyMode, k: int, seed: int, *, trace: bool) -> dict[str, float]:
    shape: Shape = [("many", ())] if mode == "samples" else star_shape(k)
    workflow = build_workflow(shape, f"{mode}{k}")
    catalog = instant_catalog()
    policy = AlwaysCheapest(samples=k if mode == "samples" else 1)
    at_gate: dict[str, float] = {}
    base: dict[str, float] = {}

    def on_gate() -> None:
        at_gate["t"] = time.perf_counter()
        at_gate["rss"] = _rss_bytes()
        if trace:
            at_gate["traced"] = tracemalloc.get_traced_memory()[0]

    # fanout: the root's call answers at once; the k leaves' calls are held together
    client = InstantClient(gate=k, pass_first=0 if mode == "samples" else 1, on_gate=on_gate)

    async def go() -> float:
        gc.collect()
        base["rss"] = _rss_bytes()
        if trace:
            tracemalloc.start()
            base["traced"] = tracemalloc.get_traced_memory()[0]
        base["t"] = time.perf_counter()
        try:
            result = await arun(
                workflow,
                catalog=catalog,
                budget_usd=_BUDGET_USD,
                deadline_s=600,
                policy=policy,
                client=client,
                seed=seed,
            )
        finally:
            if trace:
                tracemalloc.stop()
        if "t" not in at_gate or result.outcome is not Outcome.COMPLETED:
            raise BenchmarkFailed(
                f"concurrency run `{mode}` with {k} calls ended `{result.outcome}` after"
                f" {client.calls} calls ({result.run.reason}); they were never all in flight"
            )
        return time.perf_counter() - base["t"]

    total_s = asyncio.run(go())
    out = {
        "time_to_all_in_flight_s": at_gate["t"] - base["t"],
        "total_s": total_s,
        "rss_delta_per_call_bytes": (at_gate["rss"] - base["rss"]) / k,
    }
    if trace:
        out["traced_per_call_bytes"] = (at_gate["traced"] - base["traced"]) / k
    return out


def measure_concurrency(mode: ConcurrencyMode, k: int, reps: int, seed: int) -> dict[str, Any]:
    """`k` calls in flight at once: `reps` timed runs, then one run under tracemalloc.

    Samples of one subtask are bounded (`MAX_SAMPLES_PER_BATCH`), so the samples mode holds
    at most that many; the fan-out holds `k`.

    Meant to run in a fresh process (see `_isolated`): the first run's RSS growth and the
    process's peak RSS then belong to this measurement alone.
    """
    if mode == "samples":
        k = min(k, MAX_SAMPLES_PER_BATCH)
    baseline_rss = _rss_bytes()
    timed = [_concurrency_once(mode, k, seed, trace=False) for _ in range(reps)]
    traced = _concurrency_once(mode, k, seed, trace=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "mode": mode,
        "in_flight": k,
        "reps": reps,
        "time_to_all_in_flight_s": statistics.median(r["time_to_all_in_flight_s"] for r in timed),
        "total_s": statistics.median(r["total_s"] for r in timed),
        "us_per_call": statistics.median(r["total_s"] for r in timed) / k * 1e6,
        "tracemalloc_per_call_bytes": traced["traced_per_call_bytes"],
        "rss_delta_per_call_bytes": timed[0]["rss_delta_per_call_bytes"],
        "baseline_rss_mb": baseline_rss / 2**20,
        "peak_rss_mb": peak_rss / 2**20,
        "peak_rss_over_baseline_per_call_bytes": (peak_rss - baseline_rss) / k,
    }


def _isolated(mode: ConcurrencyMode, k: int, reps: int, seed: int) -> dict[str, Any]:
    """`measure_concurrency` in a fresh interpreter (it inherits the parent's CPU pinning)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result: dict[str, Any] = pool.submit(measure_concurrency, mode, k, reps, seed).result()
    return result


# ---- profile -------------------------------------------------------------------------------------


def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func
    parts = Path(file).parts
    if "site-packages" in parts:
        file = "/".join(parts[parts.index("site-packages") + 1 :])
    elif file.startswith(str(ROOT)):
        file = str(Path(file).relative_to(ROOT))
    else:
        file = Path(file).name  # the standard library
    return f"{file}:{line}({func})"


def profile_dispatch(n: int, seed: int, top: int = 15) -> dict[str, Any]:
    """cProfile one budgetflow run of the `n`-subtask DAG; top functions and time by module."""
    workflow = build_workflow(fan_shape(n), f"fan{n}")
    catalog = instant_catalog()
    profiler = cProfile.Profile()

    async def go() -> int:
        profiler.enable()
        try:
            return await _budgetflow_run(workflow, catalog, InstantClient(), seed)
        finally:
            profiler.disable()

    gc.collect()
    attempts = asyncio.run(go())
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())

    def row(key: tuple[str, int, str]) -> dict[str, Any]:
        _, ncalls, tottime, cumtime, _ = raw[key]
        return {
            "function": _where(key),
            "ncalls": ncalls,
            "tottime_s": round(tottime, 6),
            "cumtime_s": round(cumtime, 6),
            "tottime_share": round(tottime / total, 4),
            "us_per_attempt": round(tottime / attempts * 1e6, 2),
        }

    ours = [
        k for k in raw if k[0].startswith(str(ROOT)) and "/benchmarks/" not in k[0] and "/.venv/" not in k[0]
    ]
    by_module: dict[str, float] = {}
    for key, value in raw.items():
        module = _where(key).split(":")[0] if key[0] != "~" else "<builtins>"
        by_module[module] = by_module.get(module, 0.0) + value[2]
    return {
        "subtasks": n,
        "attempts": attempts,
        "profiled_total_s": round(total, 6),
        "profiled_us_per_attempt": round(total / attempts * 1e6, 2),
        "top_tottime": [row(k) for k in sorted(raw, key=lambda k: -raw[k][2])[:top]],
        "top_cumtime_project": [row(k) for k in sorted(ours, key=lambda k: -raw[k][3])[:top]],
        "tottime_by_module": [
            {"module": m, "tottime_s": round(t, 6), "share": round(t / total, 4)}
            for m, t in sorted(by_module.items(), key=lambda kv: -kv[1])[:top]
        ],
    }


# ---- driver --------------------------------------------------------------------------------------


def _machine(pinned: int | None, load_before: tuple[float, float, float]) -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "pinned_cpu": pinned,
        "cpu_model": cpu_model,
        "gpu": None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "langgraph": version("langgraph"),
        "event_loop": "asyncio (default selector loop)",
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def run_benchmark(config: BenchConfig, *, pinned: int | None = None) -> dict[str, Any]:
    """Every measurement of `config`, as a JSON-ready dict."""
    load_before = os.getloadavg()
    measure_dispatch(min(config.sizes), 1, config.seed)  # warm-up: imports, caches
    dispatch = [measure_dispatch(n, config.reps, config.seed) for n in config.sizes]
    concurrency = [
        _isolated(mode, config.in_flight, config.concurrency_reps, config.seed)
        for mode in ("samples", "fanout")
    ]
    profile = profile_dispatch(config.profile_size, config.seed) if config.profile_size else None
    return {
        "benchmark": "executor_overhead",
        "machine": _machine(pinned, load_before),
        "config": {
            "sizes": list(config.sizes),
            "reps": config.reps,
            "in_flight": config.in_flight,
            "concurrency_reps": config.concurrency_reps,
            "profile_size": config.profile_size,
            "seed": config.seed,
            "shape": "layered fan-out/fan-in: join -> ~sqrt(n) workers -> join -> ...",
            "policy": "always_cheapest",
            "backend": "InstantClient (answers at once, fixed tokens, success=True)",
        },
        "targets": {"us_per_attempt_max": TARGET_US_PER_ATTEMPT, "attempts_per_s_min": TARGET_ATTEMPTS_PER_S},
        "dispatch": dispatch,
        "concurrency": concurrency,
        "profile": profile,
    }


def _tables(results: dict[str, Any]) -> list[Table]:
    dispatch = Table(title="Executor overhead (instant backend, 1 core, median)")
    for col in (
        "subtasks",
        "budgetflow µs/attempt",
        "attempts/s",
        "LangGraph µs/node",
        "nodes/s",
        "ratio bf/lg",
        "target",
    ):
        dispatch.add_column(col, justify="right")
    for d in results["dispatch"]:
        bf, lg = d["budgetflow"], d["langgraph"]
        dispatch.add_row(
            f"{d['subtasks']:,}",
            f"{bf['us_per_attempt']:,.0f}",
            f"{bf['attempts_per_s']:,.0f}",
            f"{lg['us_per_node']:,.0f}",
            f"{lg['nodes_per_s']:,.0f}",
            f"{d['ratio_budgetflow_over_langgraph']:.1f}x",
            "met" if d["meets_targets"] else "missed",
        )
    conc = Table(title="Calls in flight at once (one process, 1 core, median)")
    for col in ("mode", "in flight", "to all in flight", "total", "µs/call", "traced B/call", "RSS B/call"):
        conc.add_column(col, justify="right")
    for c in results["concurrency"]:
        conc.add_row(
            c["mode"],
            f"{c['in_flight']:,}",
            f"{c['time_to_all_in_flight_s']:.2f} s",
            f"{c['total_s']:.2f} s",
            f"{c['us_per_call']:,.0f}",
            f"{c['tracemalloc_per_call_bytes']:,.0f}",
            f"{c['rss_delta_per_call_bytes']:,.0f}",
        )
    tables = [dispatch, conc]
    if results["profile"] is not None:
        p = results["profile"]
        prof = Table(title=f"Profile: {p['subtasks']:,} subtasks, top functions by own time")
        for col in ("function", "calls", "own s", "share", "µs/attempt"):
            prof.add_column(col, justify="right" if col != "function" else "left")
        for r in p["top_tottime"][:10]:
            prof.add_row(
                r["function"],
                f"{r['ncalls']:,}",
                f"{r['tottime_s']:.3f}",
                f"{r['tottime_share']:.0%}",
                f"{r['us_per_attempt']:,.1f}",
            )
        tables.append(prof)
    return tables


def markdown(results: dict[str, Any]) -> str:
    """The dispatch and concurrency tables in Markdown, for docs/benchmarks.md."""
    lines = [
        "| subtasks | budgetflow µs/attempt | attempts/s | LangGraph µs/node | nodes/s | ratio | target |",
        "|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for d in results["dispatch"]:
        bf, lg = d["budgetflow"], d["langgraph"]
        lines.append(
            f"| {d['subtasks']:,} | {bf['us_per_attempt']:,.0f} | {bf['attempts_per_s']:,.0f}"
            f" | {lg['us_per_node']:,.0f} | {lg['nodes_per_s']:,.0f}"
            f" | {d['ratio_budgetflow_over_langgraph']:.1f}x | {'met' if d['meets_targets'] else 'missed'} |"
        )
    lines += [
        "",
        "| mode | in flight | to all in flight | total | µs/call | tracemalloc B/call | RSS B/call |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in results["concurrency"]:
        lines.append(
            f"| {c['mode']} | {c['in_flight']:,} | {c['time_to_all_in_flight_s']:.2f} s"
            f" | {c['total_s']:.2f} s"
            f" | {c['us_per_call']:,.0f} | {c['tracemalloc_per_call_bytes']:,.0f}"
            f" | {c['rss_delta_per_call_bytes']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print tables, write JSON. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default: {DEFAULT_OUT})")
    parser.add_argument("--sizes", type=int, nargs="+", help="DAG sizes (overrides the preset)")
    parser.add_argument("--reps", type=int, help="repetitions (overrides the preset)")
    parser.add_argument("--in-flight", type=int, help="concurrent calls (overrides the preset)")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    config = BenchConfig(
        sizes=tuple(args.sizes) if args.sizes else base.sizes,
        reps=args.reps or base.reps,
        in_flight=args.in_flight or base.in_flight,
        concurrency_reps=min(base.concurrency_reps, args.reps or base.concurrency_reps),
        profile_size=max(args.sizes) if args.sizes else base.profile_size,
        seed=base.seed,
    )
    with one_core() as core:
        results = run_benchmark(config, pinned=core)
    results["command"] = " ".join([".venv/bin/python benchmarks/bench_executor.py", *(argv or [])])
    console = Console()
    for table in _tables(results):
        console.print(table)
    if args.markdown:
        console.print(markdown(results), markup=False, highlight=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
