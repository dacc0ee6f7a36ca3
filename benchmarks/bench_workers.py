"""Workers on DBOS: throughput with 1, 2 and 4 workers, queue wait, and time from a worker's death to
its runs continuing elsewhere.

```
.venv/bin/python benchmarks/bench_workers.py [--quick] [--out benchmarks/results/workers.json]
```

Real `budgetflow worker` processes on loopback (`tests.workers.cluster.Cluster`): a PostgreSQL 15
of its own (runs and DBOS's system database) and a redis-server with deploy/redis.conf (run
ledgers), runs of `tests.workers.load_workflow` (three simulated steps, policy `mcpp`, time scale
0.02: about 2 s of simulated latency per run), `--concurrency 8` per worker.

- **Throughput**: `--runs` runs enqueued at once on 1, 2 and 4 workers; runs/s and LLM calls/s
  from the enqueue to the last run's end; scaling efficiency = speedup / workers.
- **Queue wait**: enqueue (DBOS `workflow_status.created_at`) to the run's recorded start, p50/p99.
- **Takeover**: two workers busy with runs; one holding runs in progress is SIGKILLed; for each of
  its runs, the time until DBOS shows it dispatched on the other worker (polled every 50 ms);
  p50/p99 with the default takeover (`--heartbeat 2 --takeover-after 15`) and a short one
  (`0.5`/`3`). Every load is checked with `tests.workers.cluster.check_load`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tests.servers import OwnRedis, PostgresProcess
from tests.workers.cluster import Cluster, check_load, dbos_rows, wait_until

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


class _Stack:
    """A fresh PostgreSQL and Redis per measurement (nothing left from the one before)."""

    def __enter__(self) -> _Stack:
        self.root = Path(tempfile.mkdtemp(prefix="bench-workers-"))
        (self.root / "redis").mkdir()
        self.pg = PostgresProcess()
        self.pg.start()
        self.redis = OwnRedis(self.root / "redis", str(ROOT / "deploy" / "redis.conf"))
        self.redis.start_now()
        return self

    def cluster(self, **options: Any) -> Cluster:
        cluster = Cluster(root=self.root, database_url=self.pg.url, redis_url=self.redis.url, **options)
        cluster.prepare()
        self._cluster = cluster
        return cluster

    def __exit__(self, *exc: object) -> None:
        self._cluster.close()
        self.redis.kill()
        self.pg.close()


def throughput(workers: int, runs: int) -> dict[str, Any]:
    with _Stack() as stack:
        cluster = stack.cluster(concurrency=8)
        cluster.wait_ready([cluster.start_worker() for _ in range(workers)])  # warm: steady throughput
        run_ids = [f"tp{workers}-{i:04d}" for i in range(runs)]
        started = time.monotonic()
        cluster.enqueue(run_ids)
        cluster.wait_final(run_ids, timeout_s=60 + runs * 2)
        elapsed = time.monotonic() - started
        report = check_load(stack.pg.url, stack.redis.url, run_ids, cluster.root)
        rows = dbos_rows(stack.pg.url)
        waits = [d.run.started_at.timestamp() - rows[r].created_s for r, d in report.details.items()]
        return {
            "workers": workers,
            "runs": runs,
            "elapsed_s": round(elapsed, 2),
            "runs_per_s": round(runs / elapsed, 2),
            "calls_per_s": round(report.calls / elapsed, 2),
            "calls": report.calls,
            "queue_wait_p50_s": round(_pct(waits, 0.5), 2),
            "queue_wait_p99_s": round(_pct(waits, 0.99), 2),
            "outcomes": report.outcomes,
            "load_average": os.getloadavg(),
        }


def _holds(cluster: Cluster, victim: str, run_ids: list[str]) -> bool:
    return bool(cluster.holding(victim, run_ids))


def takeover(kills: int, heartbeat_s: float, takeover_after_s: float) -> dict[str, Any]:
    times: list[float] = []
    with _Stack() as stack:
        cluster = stack.cluster(heartbeat_s=heartbeat_s, takeover_after_s=takeover_after_s)
        all_ids: list[str] = []
        survivor = cluster.start_worker()
        for k in range(kills):
            victim = cluster.start_worker()
            cluster.wait_ready([survivor, victim])
            run_ids = [f"to-{k}-{i}" for i in range(2 * cluster.concurrency)]  # more than one takes
            all_ids += run_ids
            cluster.enqueue(run_ids, seed=100 * k)
            wait_until(
                "the victim to be in the middle of runs",
                functools.partial(_holds, cluster, victim, run_ids),
                60,
                0.05,
            )
            held = [r for r, (s, e) in cluster.statuses(run_ids).items() if s == "PENDING" and e == victim]
            cluster.kill(victim)
            killed = time.monotonic()
            waiting = set(held)
            while waiting:
                now = cluster.statuses(sorted(waiting))
                for run_id, (status, executor) in now.items():
                    if executor != victim and status in ("PENDING", "SUCCESS"):
                        times.append(time.monotonic() - killed)
                        waiting.discard(run_id)
                if time.monotonic() - killed > takeover_after_s + 60:
                    raise AssertionError(f"runs {sorted(waiting)} were not taken over")
                time.sleep(0.05)
            cluster.wait_final(run_ids, timeout_s=120)
        report = check_load(stack.pg.url, stack.redis.url, all_ids, cluster.root)
    return {
        "heartbeat_s": heartbeat_s,
        "takeover_after_s": takeover_after_s,
        "kills": kills,
        "runs_taken_over": len(times),
        "p50_s": round(_pct(times, 0.5), 2),
        "p99_s": round(_pct(times, 0.99), 2),
        "max_s": round(max(times), 2),
        "outcomes": report.outcomes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs and kills")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per throughput measurement (default 120)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "workers.json")
    args = parser.parse_args(argv)
    runs = args.runs or (40 if args.quick else 120)
    console = Console()
    rows = [throughput(w, runs) for w in (1, 2, 4)]
    base = rows[0]["runs_per_s"]
    for row in rows:
        row["speedup"] = round(row["runs_per_s"] / base, 2)
        row["efficiency"] = round(row["runs_per_s"] / base / row["workers"], 2)
    kills = 2 if args.quick else 4
    takeovers = [takeover(kills, 2.0, 15.0), takeover(kills + 2, 0.5, 3.0)]

    table = Table(title=f"workers on {os.cpu_count()} cores, {runs} runs each")
    for col in ("workers", "runs/s", "calls/s", "speedup", "efficiency", "queue wait p50", "p99", "load avg"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["workers"]), f"{r['runs_per_s']:.2f}", f"{r['calls_per_s']:.1f}", f"{r['speedup']:.2f}",
            f"{r['efficiency']:.2f}", f"{r['queue_wait_p50_s']:.1f} s", f"{r['queue_wait_p99_s']:.1f} s",
            "/".join(f"{x:.1f}" for x in r["load_average"]),
        )  # fmt: skip
    console.print(table)
    death = Table(title="death (SIGKILL) to the run dispatched on another worker")
    for col in ("heartbeat", "takeover after", "runs", "p50", "p99", "max"):
        death.add_column(col, justify="right")
    for t in takeovers:
        death.add_row(
            f"{t['heartbeat_s']:g} s", f"{t['takeover_after_s']:g} s", str(t["runs_taken_over"]),
            f"{t['p50_s']:.1f} s", f"{t['p99_s']:.1f} s", f"{t['max_s']:.1f} s",
        )  # fmt: skip
    console.print(death)
    result = {
        "command": " ".join(["benchmarks/bench_workers.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_average_end": os.getloadavg(),
        "throughput": rows,
        "takeover": takeovers,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
