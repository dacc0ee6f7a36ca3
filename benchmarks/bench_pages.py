"""Server time of the API's and the dashboard's read pages on a database at real volume.

```
.venv/bin/python benchmarks/bench_pages.py [--database-url URL] [--reps 20] [--warmups 2]
    [--runs 10000] [--calls-per-run 100] [--detail-calls 2000] [--seed 0] [--out FILE]
```

Seeds the volume database, or reuses it (`benchmarks/seed_volume.py`: 10,000 runs, a
million calls, one run of 2,000 calls; minutes the first time), builds the app as
`budgetflow serve` does (`web.api.create_app`, the example workflows registered, every
request allowed) over it, runs its lifespan, and sends GET requests in process through
`httpx.ASGITransport`: no network, no server process, so what is timed is the app's own
handling. Two clocks: *server*, an ASGI wrapper around the app from the request's arrival
to the last byte of its answer (what the targets are about), and *client*, around the
`httpx` call (adds the in-process transport).

Paths, one request each in turn within every repetition, after `--warmups` rounds:

- API: `/runs` (first page), filtered by workflow, sorted by spend, a later page (the
  cursor after four pages), and `/runs/{id}` for the 2,000-call run;
- dashboard: `/ui` (overview), `/ui/runs`, `/ui/runs/{id}` (the 2,000-call run), `/ui/models`.

Targets (from the serve issue): overview and runs pages under 300 ms, run detail under
500 ms of server time, judged on the median (p95 reported beside it); `/ui/models` has
none. A path answering 404 is reported "not served yet". The answers are checked against
the database: `/runs` counts every run, `/runs/{id}` holds the seeded calls. Results go to
`benchmarks/results/pages.json`; the exit code is 1 when a target is missed or a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from benchmarks.seed_volume import Seeded, SeedError, add_arguments, seed_volume, spec_from
from budgetflow.settings import Settings
from orchestrator.records import CallKind
from storage import make_engine
from storage._engine import sqlite_path
from storage.models import Call, Run
from web.api import AllowAll, WorkflowRegistry, create_app

__all__ = ["TARGETS_MS", "WORKFLOW_MODULES", "main", "measure"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "pages.json"
TARGETS_MS: Final = {"overview": 300.0, "runs": 300.0, "detail": 500.0}
"""Server-time targets per kind of page (milliseconds, median)."""
WORKFLOW_MODULES: Final = (
    "examples.code_pipeline",
    "examples.research_qa",
    "examples.hard_step",
    "examples.local_model",
)
"""The workflows the app registers (the seeded runs use their names, and others)."""
_CURSOR_PAGE: Final = 5


class BenchmarkFailed(Exception):
    """The app could not be measured."""


@dataclass(frozen=True, kw_only=True)
class Probe:
    """A path to time."""

    name: str
    """Short label."""
    path: str
    """Path and query."""
    kind: str | None
    """`overview`, `runs` or `detail` (its target), `None` for no target."""


class _ServerClock:
    """ASGI wrapper timing the app: from the request's arrival to the last byte of the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last_s = math.nan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last_s = time.perf_counter() - t0

        await self.app(scope, receive, timed)


def _probes(detail_run_id: str, cursor: str | None, limit: int) -> list[Probe]:
    probes = [
        Probe(name="api runs", path="/runs", kind="runs"),
        Probe(name="api runs by workflow", path="/runs?workflow=code-pipeline", kind="runs"),
        Probe(name="api runs by spend", path="/runs?sort=-spent_usd", kind="runs"),
    ]
    if cursor is not None:
        path = f"/runs?limit={limit}&cursor={cursor}"
        probes.append(Probe(name=f"api runs page {_CURSOR_PAGE}", path=path, kind="runs"))
    return [
        *probes,
        Probe(name="api run detail", path=f"/runs/{detail_run_id}", kind="detail"),
        Probe(name="ui overview", path="/ui", kind="overview"),
        Probe(name="ui runs", path="/ui/runs", kind="runs"),
        Probe(name="ui run detail", path=f"/ui/runs/{detail_run_id}", kind="detail"),
        Probe(name="ui models", path="/ui/models", kind=None),
    ]


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (the value at rank ⌈q·n⌉)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _tree_calls(nodes: Sequence[dict[str, Any]]) -> int:
    return sum(1 + _tree_calls(node["children"]) for node in nodes)


async def _cursor(client: httpx.AsyncClient, limit: int) -> str | None:
    """The cursor of page `_CURSOR_PAGE` of `/runs?limit=...`, following `next_cursor`."""
    cursor = None
    for _ in range(_CURSOR_PAGE - 1):
        params: dict[str, str | int] = (
            {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        )
        answer = await client.get("/runs", params=params)
        answer.raise_for_status()
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return None
    return cursor


def _database_facts(seeded: Seeded, url: str) -> dict[str, int]:
    engine = make_engine(url, must_exist=True)
    try:
        with engine.connect() as connection:
            llm = Call.kind == CallKind.LLM.value
            detail = Call.run_id == seeded.detail_run_id
            return {
                "runs": int(connection.scalar(sa.select(sa.func.count()).select_from(Run)) or 0),
                "calls": int(connection.scalar(sa.select(sa.func.count()).select_from(Call)) or 0),
                "detail_calls": int(connection.scalar(sa.select(sa.func.count()).where(detail)) or 0),
                "detail_llm_calls": int(
                    connection.scalar(sa.select(sa.func.count()).where(detail, llm)) or 0
                ),
                "code_pipeline_runs": int(
                    connection.scalar(sa.select(sa.func.count()).where(Run.workflow == "code-pipeline")) or 0
                ),
            }
    finally:
        engine.dispose()


async def _checks(client: httpx.AsyncClient, seeded: Seeded, facts: dict[str, int]) -> dict[str, Any]:
    """The API's answers beside the database's counts."""
    runs = (await client.get("/runs")).json()
    by_workflow = (await client.get("/runs", params={"workflow": "code-pipeline"})).json()
    by_spend = (await client.get("/runs", params={"sort": "-spent_usd"})).json()
    detail = (await client.get(f"/runs/{seeded.detail_run_id}")).json()
    tree = detail["tree"]
    spends = [float(r["spent_usd"]) for r in by_spend["runs"]]
    got = {
        "runs_total_api": runs["total"],
        "code_pipeline_total_api": by_workflow["total"],
        "code_pipeline_only": all(r["workflow"] == "code-pipeline" for r in by_workflow["runs"]),
        "spend_sorted_descending": spends == sorted(spends, reverse=True),
        "detail_llm_calls_api": detail["calls"],
        "detail_tree_nodes_api": _tree_calls(
            [c for s in tree["subtasks"] for a in s["attempts"] for c in a["calls"]]
        )
        + _tree_calls(tree["run_calls"]),
        **{f"{key}_db": value for key, value in facts.items()},
    }
    got["agree"] = bool(
        got["runs_total_api"] == facts["runs"] == seeded.spec.runs
        and got["code_pipeline_total_api"] == facts["code_pipeline_runs"]
        and got["code_pipeline_only"]
        and got["spend_sorted_descending"]
        and got["detail_llm_calls_api"] == facts["detail_llm_calls"]
        and got["detail_tree_nodes_api"] == facts["detail_calls"] == seeded.spec.detail_calls
        and facts["calls"] == seeded.spec.calls
    )
    return got


async def measure(url: str, seeded: Seeded, *, reps: int, warmups: int) -> dict[str, Any]:
    """Time every probe `reps` times (round robin, after `warmups` rounds); check the answers."""
    settings = Settings(database_url=url, api_workflows=WORKFLOW_MODULES)
    app = create_app(
        settings,
        authorizer=AllowAll(),
        workflows=WorkflowRegistry.from_modules(settings.api_workflows, settings),
    )
    clock = _ServerClock(app)
    facts = await asyncio.to_thread(_database_facts, seeded, url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=clock)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench.test", timeout=120
        ) as client:
            # Pages of 50, the default (fewer on a small database, so that page 5 exists).
            limit = max(1, min(50, seeded.spec.runs // _CURSOR_PAGE))
            probes = _probes(seeded.detail_run_id, await _cursor(client, limit), limit)
            checks = await _checks(client, seeded, facts)
            server: dict[str, list[float]] = {p.name: [] for p in probes}
            wall: dict[str, list[float]] = {p.name: [] for p in probes}
            status: dict[str, int] = {}
            size: dict[str, int] = {}
            for round_ in range(warmups + reps):
                for probe in probes:
                    if status.get(probe.name) not in (None, 200):
                        continue  # not served (404) or broken: reported once
                    gc.collect()
                    t0 = time.perf_counter()
                    answer = await client.get(probe.path)
                    elapsed = time.perf_counter() - t0
                    status[probe.name] = answer.status_code
                    size[probe.name] = len(answer.content)
                    if round_ >= warmups and answer.status_code == 200:
                        server[probe.name].append(clock.last_s * 1000)
                        wall[probe.name].append(elapsed * 1000)
    rows = []
    for probe in probes:
        code = status[probe.name]
        row: dict[str, Any] = {
            **asdict(probe),
            "status": code,
            "served": code == 200,
            "target_ms": TARGETS_MS.get(probe.kind or ""),
        }
        if code == 200:
            times = server[probe.name]
            row |= {
                "bytes": size[probe.name],
                "median_ms": statistics.median(times),
                "p95_ms": _percentile(times, 0.95),
                "max_ms": max(times),
                "client_median_ms": statistics.median(wall[probe.name]),
                "server_ms_all": [round(t, 2) for t in times],
            }
            if row["target_ms"] is not None:
                row["meets_target"] = row["median_ms"] < row["target_ms"]
                row["p95_within_target"] = row["p95_ms"] < row["target_ms"]
        rows.append(row)
    return {"probes": rows, "checks": checks}


def _machine(url: str, load_before: tuple[float, float, float]) -> dict[str, Any]:
    engine = make_engine(url)
    path = sqlite_path(engine.url)
    engine.dispose()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "database": engine.dialect.name,
        "database_mb": round(path.stat().st_size / 2**20, 1) if path is not None and path.exists() else None,
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": version("sqlalchemy"),
        "fastapi": version("fastapi"),
    }


def _table(rows: Sequence[dict[str, Any]], seeded: Seeded) -> Table:
    spec = seeded.spec
    table = Table(
        title=f"Server time per request, {spec.runs:,} runs / {spec.calls:,} calls"
        f" (detail run: {spec.detail_calls:,} calls), ms"
    )
    for column in ("path", "median", "p95", "max", "client", "KiB", "target", "result"):
        table.add_column(column, justify="left" if column == "path" else "right", no_wrap=True)
    for row in rows:
        if not row["served"]:
            shown = "not served yet" if row["status"] == 404 else f"HTTP {row['status']}"
            table.add_row(row["name"], "", "", "", "", "", "", shown)
            continue
        target = "" if row["target_ms"] is None else f"< {row['target_ms']:.0f}"
        result = ""
        if "meets_target" in row:
            result = "met" if row["meets_target"] else "MISSED"
            if row["meets_target"] and not row["p95_within_target"]:
                result += " (p95 over)"
        table.add_row(
            row["name"],
            f"{row['median_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
            f"{row['max_ms']:.1f}",
            f"{row['client_median_ms']:.1f}",
            f"{row['bytes'] / 1024:,.0f}",
            target,
            result,
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Seed or reuse, measure, print the table, write the JSON; 1 when a target or a check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser)
    parser.add_argument("--reps", type=int, default=20, help="timed requests per path")
    parser.add_argument("--warmups", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # the table whole in a log
    try:
        seeded = seed_volume(
            args.database_url,
            spec_from(args),
            reset=args.reset,
            max_age_hours=args.max_age_hours,
            progress=lambda line: console.print(line, markup=False, highlight=False),
        )
    except SeedError as exc:
        console.print(f"error: {exc}", markup=False)
        return 2
    load_before = os.getloadavg()
    console.print(f"timing {args.reps} requests per path after {args.warmups} warm-up rounds ...")
    results = asyncio.run(measure(args.database_url, seeded, reps=args.reps, warmups=args.warmups))
    machine = _machine(args.database_url, load_before)
    rows = results["probes"]
    report = {
        "command": " ".join(
            [
                f".venv/bin/python benchmarks/{Path(__file__).name}",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "targets_ms": TARGETS_MS,
        "judged_on": "median server time",
        "reps": args.reps,
        "warmups": args.warmups,
        "seeded": {
            "database_url": seeded.database_url,
            **asdict(seeded.spec),
            "calls": seeded.spec.calls,
            "detail_run_id": seeded.detail_run_id,
            "anchor": seeded.anchor.isoformat(),
            "seed_seconds": round(seeded.seconds, 1),
            "reused": seeded.reused,
            "rollups": seeded.rollups,
        },
        "machine": machine,
        "checks": results["checks"],
        "results": rows,
    }
    console.print(_table(rows, seeded))
    console.print(f"load average before/after: {machine['loadavg_before']} / {machine['loadavg_after']}")
    checks = results["checks"]
    console.print(
        f"answers agree with the database: {checks['agree']} (runs {checks['runs_total_api']:,},"
        f" detail run {checks['detail_tree_nodes_api']:,} calls of which {checks['detail_llm_calls_api']:,}"
        " model calls)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written: {args.out}")
    met = all(row.get("meets_target", True) for row in rows)
    return 0 if met and checks["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
