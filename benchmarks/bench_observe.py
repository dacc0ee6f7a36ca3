"""Executor overhead of OpenTelemetry tracing: the same runs with tracing off and on, side by side.

```
.venv/bin/python benchmarks/bench_tracing.py [--quick] [--out benchmarks/results/tracing.json]
```

The executor benchmark's dispatch shapes (layered fan-out/fan-in DAGs of 10, 100 and
1,000 subtasks, one instant model call per attempt, policy `always_cheapest`, the
in-memory recorder and ledger; see `bench_executor.py`), each run in three ways, in
rotating order within every repetition, on one pinned core:

- `off`: no interceptor (what every run without tracing pays: nothing is built);
- `hooks`: `TracingInterceptor` on OpenTelemetry's no-op providers (the hooks and the
  attributes they assemble, as when the global providers were never configured);
- `otel`: `TracingInterceptor` on the SDK: a `TracerProvider` with a `BatchSpanProcessor`
  into an in-memory exporter, and a `MeterProvider` recording the two GenAI client
  histograms into an in-memory reader (what `budgetflow run` does with OTLP, minus
  the network, which the batch processor does on its own thread).

Reported per shape and way: the median wall time per attempt and attempts/s, and the
overhead of each way over `off` (median of the per-repetition ratios). Target (from
the issue): at most 30% with tracing on.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console
from rich.table import Table

from benchmarks._instant_client import InstantClient, instant_catalog
from benchmarks.bench_executor import build_workflow, fan_shape
from budgetflow import arun
from budgetflow.tracing import SEMCONV_VERSION, TracingInterceptor
from orchestrator.catalog import Catalog
from orchestrator.interceptors import Interceptor
from orchestrator.records import Outcome
from orchestrator.workflow import Workflow
from policies.baselines import AlwaysCheapest

__all__ = ["WAYS", "main", "measure"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "tracing.json"
TARGET_OVERHEAD = 0.30
WAYS = ("off", "hooks", "spans", "otel")
_BUDGET_USD = 100_000


class BenchmarkFailed(Exception):
    """A measured run did not do what the benchmark needs."""


@dataclass
class _Way:
    """Interceptors for one run, and what they exported."""

    interceptors: list[Interceptor]
    spans: InMemorySpanExporter | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None

    def close(self) -> int:
        """Flush and stop the providers; the spans exported."""
        if self.tracer_provider is None or self.spans is None or self.meter_provider is None:
            return 0
        self.tracer_provider.force_flush()
        exported = len(self.spans.get_finished_spans())
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        return exported


def _way(name: str) -> _Way:
    if name == "off":
        return _Way(interceptors=[])
    if name == "hooks":
        noop = TracingInterceptor(
            tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
        )
        return _Way(interceptors=[noop])
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    interceptor = TracingInterceptor(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider if name == "otel" else metrics.NoOpMeterProvider(),
    )
    return _Way(
        interceptors=[interceptor],
        spans=spans,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )


@dataclass(frozen=True, kw_only=True)
class _Timed:
    wall_s: float
    attempts: int
    spans_expected: int
    spans_exported: int


def _timed(workflow: Workflow, catalog: Catalog, way_name: str, seed: int) -> _Timed:
    way = _way(way_name)

    async def go() -> tuple[float, int, int]:
        t0 = time.perf_counter()
        result = await arun(
            workflow,
            catalog=catalog,
            budget_usd=_BUDGET_USD,
            policy=AlwaysCheapest(),
            client=InstantClient(),
            seed=seed,
            interceptors=way.interceptors,
        )
        wall = time.perf_counter() - t0
        if result.outcome is not Outcome.COMPLETED:
            raise BenchmarkFailed(f"benchmark run ended `{result.outcome}`: {result.run.reason}")
        if any(stats.errors for stats in result.interceptors):
            raise BenchmarkFailed(f"an interceptor failed: {result.interceptors}")
        return wall, len(result.attempts), 1 + len(result.decisions) + len(result.calls)

    gc.collect()
    wall, attempts, expected = asyncio.run(go())
    exported = way.close()
    return _Timed(
        wall_s=wall,
        attempts=attempts,
        spans_expected=expected if way_name in ("spans", "otel") else 0,
        spans_exported=exported,
    )


def measure(n: int, reps: int, seed: int) -> dict[str, Any]:
    """Each way on the `n`-subtask fan DAG, `reps` times, in rotating order within each repetition."""
    shape = fan_shape(n)
    catalog = instant_catalog()
    runs: dict[str, list[_Timed]] = {way: [] for way in WAYS}
    for rep in range(reps):
        order = WAYS[rep % len(WAYS) :] + WAYS[: rep % len(WAYS)]
        for way in order:
            runs[way].append(_timed(build_workflow(shape, f"fan{n}"), catalog, way, seed))
    out: dict[str, Any] = {"subtasks": n, "reps": reps, "ways": {}}
    for way in WAYS:
        per_attempt = [r.wall_s / r.attempts * 1e6 for r in runs[way]]
        entry: dict[str, Any] = {
            "attempts": runs[way][0].attempts,
            "us_per_attempt": statistics.median(per_attempt),
            "attempts_per_s": statistics.median(r.attempts / r.wall_s for r in runs[way]),
            "wall_s_all": [round(r.wall_s, 6) for r in runs[way]],
        }
        if way != "off":
            ratios = [o.wall_s / b.wall_s for o, b in zip(runs[way], runs["off"], strict=True)]
            entry["overhead"] = statistics.median(ratios) - 1
        if way in ("spans", "otel"):
            entry["spans_expected"] = runs[way][0].spans_expected
            entry["spans_exported_min"] = min(r.spans_exported for r in runs[way])
        out["ways"][way] = entry
    out["meets_target"] = out["ways"]["otel"]["overhead"] <= TARGET_OVERHEAD
    return out


def _machine(pinned: int | None, load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pinned_core": pinned,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "opentelemetry_sdk": version("opentelemetry-sdk"),
        "semconv": SEMCONV_VERSION,
    }


def _table(results: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="executor overhead of tracing (median per attempt; overhead vs off, paired)")
    for column in ("subtasks", "way", "µs/attempt", "attempts/s", "overhead", "spans exported"):
        table.add_column(column, justify="right")
    for result in results:
        for way in WAYS:
            entry = result["ways"][way]
            overhead = "" if way == "off" else f"{entry['overhead'] * 100:+.1f}%"
            spans = ""
            if "spans_expected" in entry:
                spans = f"{entry['spans_exported_min']}/{entry['spans_expected']}"
            table.add_row(
                str(result["subtasks"]),
                way,
                f"{entry['us_per_attempt']:.0f}",
                f"{entry['attempts_per_s']:,.0f}",
                overhead,
                spans,
            )
    return table


def _pin() -> tuple[int | None, Callable[[], None]]:
    if not hasattr(os, "sched_setaffinity"):
        return None, lambda: None
    previous = os.sched_getaffinity(0)
    core = max(previous)
    os.sched_setaffinity(0, {core})
    return core, lambda: os.sched_setaffinity(0, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the JSON; 1 when the overhead target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10 and 100 subtasks, 3 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 7, quick 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = (10, 100) if args.quick else (10, 100, 1000)
    reps = args.reps or (3 if args.quick else 7)
    console = Console()
    load_before = os.getloadavg()
    pinned, unpin = _pin()
    try:
        results = [measure(n, reps, args.seed) for n in sizes]
    finally:
        unpin()
    machine = _machine(pinned, load_before)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "target_overhead": TARGET_OVERHEAD,
        "machine": machine,
        "results": results,
    }
    console.print(_table(results))
    console.print(f"load average before/after: {machine['loadavg_before']} / {machine['loadavg_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written: {args.out}")
    return 0 if all(r["meets_target"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
