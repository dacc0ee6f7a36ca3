"""Executor overhead of watching runs: metrics, the progress view, traces, side by side.

```
.venv/bin/python benchmarks/bench_observe.py [--quick] [--reps N] [--out benchmarks/results/observe.json]
```

The executor benchmark's dispatch shapes (layered fan-out/fan-in DAGs of 10, 100 and
1,000 subtasks, one instant model call per attempt, policy `always_cheapest`, the
in-memory recorder and ledger; see `bench_executor.py`), each run in every way below,
in rotating order within every repetition, on one pinned core:

- `off`: no observer, no interceptor (nothing is built);
- `metrics`: the Prometheus metrics observer (`web.BudgetflowMetrics`, one registry for
  the process, as `budgetflow run --metrics-port` has);
- `progress`: the CLI's live progress view (`budgetflow.progress.ProgressView`, drawn
  4 times a second into an 80x24 terminal that is a string buffer);
- `hooks`: `TracingInterceptor` on OpenTelemetry's no-op providers (the hooks and the
  attributes they assemble, as when the global providers were never configured);
- `unsampled`: `TracingInterceptor` on an SDK `TracerProvider` whose sampler drops every
  trace (what a run costs that a ratio sampler, `OTEL_TRACES_SAMPLER=traceidratio`,
  leaves out);
- `spans`: `TracingInterceptor` on the SDK: a `TracerProvider` with a `BatchSpanProcessor`
  into an in-memory exporter (traces on, what `budgetflow run` does with OTLP minus the
  network, which the batch processor does on its own thread);
- `otel`: `spans`, and a `MeterProvider` recording the two GenAI client histograms into
  an in-memory reader;
- `all`: `otel`, `metrics` and `progress` together.

Reported per shape and way: the median wall time per attempt and attempts/s, and the
overhead over `off` (median of the per-repetition ratios). Targets: at most 15% with
metrics on (`metrics`), at most 30% with tracing on (`spans`). No observer may lose an
event and every span must be exported.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from benchmarks._instant_client import InstantClient, instant_catalog
from benchmarks._pinning import one_core
from benchmarks.bench_executor import build_workflow, fan_shape
from budgetflow import arun
from budgetflow.progress import ProgressView
from budgetflow.tracing import SEMCONV_VERSION, TracingInterceptor
from orchestrator.catalog import Catalog
from orchestrator.events import Observer
from orchestrator.interceptors import Interceptor
from orchestrator.records import Outcome
from orchestrator.workflow import Workflow
from policies.baselines import AlwaysCheapest
from web import BudgetflowMetrics

__all__ = ["TARGETS", "WAYS", "main", "markdown", "measure"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "observe.json"
TARGETS = {"metrics": 0.15, "spans": 0.30}
"""The overhead each way may add at most."""
WAYS = ("off", "metrics", "progress", "hooks", "unsampled", "spans", "otel", "all")
_TRACED = ("spans", "otel", "all")
_BUDGET_USD = 100_000


class BenchmarkFailed(Exception):
    """A measured run did not do what the benchmark needs."""


@dataclass
class _Way:
    """Observers and interceptors for one run, and what they exported."""

    observers: list[Observer] = field(default_factory=list)
    interceptors: list[Interceptor] = field(default_factory=list)
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


def _progress(workflow: Workflow) -> ProgressView:
    terminal = Console(file=io.StringIO(), force_terminal=True, width=80, height=24)
    return ProgressView(
        terminal,
        subtasks=list(workflow.topological_order()),
        budget_usd=Decimal(_BUDGET_USD),
        deadline_s=None,
        simulated=[],
        live=True,
    )


def _way(name: str, workflow: Workflow, catalog: Catalog, metrics_: BudgetflowMetrics) -> _Way:
    if name == "off":
        return _Way()
    if name == "metrics":
        return _Way(observers=[metrics_.observer(catalog=catalog)])
    if name == "progress":
        return _Way(observers=[_progress(workflow)])
    if name == "hooks":
        noop = TracingInterceptor(
            tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
        )
        return _Way(interceptors=[noop])
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(
        shutdown_on_exit=False, sampler=ALWAYS_OFF if name == "unsampled" else ALWAYS_ON
    )
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    interceptor = TracingInterceptor(
        tracer_provider=tracer_provider,
        meter_provider=metrics.NoOpMeterProvider() if name in ("spans", "unsampled") else meter_provider,
    )
    observers: list[Observer] = []
    if name == "all":
        observers = [metrics_.observer(catalog=catalog), _progress(workflow)]
    return _Way(
        observers=observers,
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


def _timed(
    workflow: Workflow, catalog: Catalog, way_name: str, seed: int, metrics_: BudgetflowMetrics
) -> _Timed:
    way = _way(way_name, workflow, catalog, metrics_)

    async def go() -> tuple[float, int, int]:
        t0 = time.perf_counter()
        result = await arun(
            workflow,
            catalog=catalog,
            budget_usd=_BUDGET_USD,
            policy=AlwaysCheapest(),
            client=InstantClient(),
            seed=seed,
            observers=way.observers,
            interceptors=way.interceptors,
        )
        wall = time.perf_counter() - t0
        if result.outcome is not Outcome.COMPLETED:
            raise BenchmarkFailed(f"benchmark run ended `{result.outcome}`: {result.run.reason}")
        if any(stats.errors for stats in result.interceptors):
            raise BenchmarkFailed(f"an interceptor failed: {result.interceptors}")
        lost = [stats for stats in result.observers if stats.dropped or stats.errors]
        if lost:
            raise BenchmarkFailed(f"observers lost events: {lost}")
        return wall, len(result.attempts), 1 + len(result.decisions) + len(result.calls)

    gc.collect()
    wall, attempts, expected = asyncio.run(go())
    exported = way.close()
    return _Timed(
        wall_s=wall,
        attempts=attempts,
        spans_expected=expected if way_name in _TRACED else 0,
        spans_exported=exported,
    )


def measure(n: int, reps: int, seed: int, metrics_: BudgetflowMetrics) -> dict[str, Any]:
    """Each way on the `n`-subtask fan DAG, `reps` times, in rotating order within each repetition."""
    shape = fan_shape(n)
    catalog = instant_catalog()
    runs: dict[str, list[_Timed]] = {way: [] for way in WAYS}
    for rep in range(reps):
        order = WAYS[rep % len(WAYS) :] + WAYS[: rep % len(WAYS)]
        for way in order:
            runs[way].append(_timed(build_workflow(shape, f"fan{n}"), catalog, way, seed, metrics_))
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
            entry["overhead_all"] = [round(r - 1, 4) for r in ratios]
        if way in TARGETS:
            entry["target"] = TARGETS[way]
            entry["meets_target"] = entry["overhead"] <= TARGETS[way]
        if way == "unsampled" and any(r.spans_exported for r in runs[way]):
            raise BenchmarkFailed("unsampled: the sampler dropped every trace, yet spans were exported")
        if way in _TRACED:
            entry["spans_expected"] = runs[way][0].spans_expected
            entry["spans_exported_min"] = min(r.spans_exported for r in runs[way])
            if entry["spans_exported_min"] != entry["spans_expected"]:
                raise BenchmarkFailed(
                    f"{way}: {entry['spans_exported_min']} of {entry['spans_expected']} spans exported"
                )
        out["ways"][way] = entry
    out["meets_targets"] = all(out["ways"][way]["meets_target"] for way in TARGETS)
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
    table = Table(title="Overhead of watching runs (median per attempt, paired vs off)")
    for column in ("subtasks", "way", "µs/att.", "att./s", "overhead", "target", "spans"):
        table.add_column(column, justify="right", no_wrap=True)
    for result in results:
        for way in WAYS:
            entry = result["ways"][way]
            overhead = "" if way == "off" else f"{entry['overhead'] * 100:+.1f}%"
            target = ""
            if "target" in entry:
                target = f"{'met' if entry['meets_target'] else 'MISSED'} ≤{entry['target']:.0%}"
            spans = ""
            if "spans_expected" in entry:
                spans = f"{entry['spans_exported_min']}/{entry['spans_expected']}"
            table.add_row(
                f"{result['subtasks']:,}" if way == "off" else "",
                way,
                f"{entry['us_per_attempt']:.0f}",
                f"{entry['attempts_per_s']:,.0f}",
                overhead,
                target,
                spans,
            )
        table.add_section()
    return table


def markdown(results: Sequence[dict[str, Any]]) -> str:
    """The table as Markdown, one row per shape, one column per way (overhead vs off)."""
    ways = [w for w in WAYS if w != "off"]
    lines = [
        "| subtasks | off µs/attempt | " + " | ".join(ways) + " |",
        "|---:|---:|" + "---:|" * len(ways),
    ]
    for result in results:
        cells = [f"{result['ways'][w]['overhead'] * 100:+.0f}%" for w in ways]
        lines.append(
            f"| {result['subtasks']:,} | {result['ways']['off']['us_per_attempt']:.0f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the JSON; 1 when an overhead target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10 and 100 subtasks, 3 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 11, quick 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="also print the overheads as Markdown")
    args = parser.parse_args(argv)
    sizes = (10, 100) if args.quick else (10, 100, 1000)
    reps = args.reps or (3 if args.quick else 11)
    console = Console()
    load_before = os.getloadavg()
    with one_core() as pinned:
        metrics_ = BudgetflowMetrics(CollectorRegistry())
        results = [measure(n, reps, args.seed, metrics_) for n in sizes]
    machine = _machine(pinned, load_before)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "targets": TARGETS,
        "machine": machine,
        "results": results,
    }
    console.print(_table(results))
    if args.markdown:
        console.print(markdown(results), soft_wrap=True)
    console.print(f"load average before/after: {machine['loadavg_before']} / {machine['loadavg_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written: {args.out}")
    return 0 if all(r["meets_targets"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
