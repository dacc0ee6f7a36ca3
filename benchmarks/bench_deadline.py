"""How long after its deadline does a run end? Measured on the real clock, on every path.

    .venv/bin/python benchmarks/bench_deadline.py [--paths inflight,sim,cli,vllm,big] [--runs 50]
                                                  [--out benchmarks/results/deadline.json]

Paths:

- `inflight`: N simulated 60 s calls in flight (N independent subtasks) at a 0.3 s deadline
  (N = 1, 10, 100, 1,000): the cost of cancelling, recording and settling what is in flight.
- `sim`: `arun` in this process with the default client (litellm, simulated backend) on a
  chain that cannot finish in its 3 s deadline; MCPP decides.
- `cli`: `budgetflow run` processes (two at a time, on the 2 cores) on the same chain;
  overshoot from the recorded run (`ended_at - started_at - deadline`).
- `vllm`: runs on two real vLLM CPU replicas whose answers take ~35 s (decode delay),
  with a 3 s deadline (needs `scripts/setup_vllm.sh`).
- `big`: MCPP on a 2,000-subtask layered DAG (simulated backend, real clock), 10 s deadline.

Overshoot = when the run returned - its deadline (negative: it ended before). The
table shows the distribution over the runs and the share that ended within 1 s of it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agents import LLMAgent  # noqa: E402
from budgetflow import arun  # noqa: E402
from orchestrator import AttemptEstimate, Catalog, LogNormal, ModelSpec, RunResult, Workflow  # noqa: E402
from orchestrator.simulated import SimulatedBackend, SimulatedClient  # noqa: E402
from policies.baselines import FixedModel  # noqa: E402

INFLIGHT_DEADLINE_S = 0.3
CHAIN_DEADLINE_S = 3.0
BIG_DEADLINE_S = 10.0

CHAIN = REPO / "benchmarks" / "workflows" / "deadline_chain.py"
"""Six simulated subtasks of 1-2 s each, MCPP deciding: they cannot finish in 3 s."""


def _overshoot(result: RunResult, deadline_s: float) -> float:
    return (datetime.now(UTC) - result.run.started_at).total_seconds() - deadline_s


async def _inflight(calls: int, seed: int) -> float:
    """`calls` independent subtasks, one 60 s call each, all in flight at the deadline."""
    catalog = Catalog.of(
        ModelSpec(name="m", litellm_model="budgetflow-sim/m", input_price_per_mtok=0, output_price_per_mtok=1)
    )
    est = AttemptEstimate(success_prob=1.0, output_tokens=LogNormal(mean=100), latency_s=LogNormal(mean=60.0))
    wf = Workflow("slow")
    for i in range(calls):
        wf.subtask(f"s{i}", LLMAgent(prompt="x"), models=["m"], estimates={"m": est})
    client = SimulatedClient(SimulatedBackend({(f"s{i}", "m"): est for i in range(calls)}, seed=seed))
    result = await arun(
        wf,
        catalog=catalog,
        budget_usd=100,
        deadline_s=INFLIGHT_DEADLINE_S,
        policy=FixedModel(model="m", samples=1),
        client=client,
        seed=seed,
    )
    assert result.outcome.value == "deadline_exceeded", result.outcome
    return _overshoot(result, INFLIGHT_DEADLINE_S)


async def _sim(seed: int) -> float:
    from budgetflow.loader import load_workflow_file

    chain = load_workflow_file(CHAIN)
    assert chain.catalog is not None and chain.budget_usd is not None
    result = await arun(
        chain.workflow,
        catalog=chain.catalog,
        budget_usd=chain.budget_usd,
        deadline_s=CHAIN_DEADLINE_S,
        inputs=chain.inputs,
        policy="mcpp",
        seed=seed,
    )
    return _overshoot(result, CHAIN_DEADLINE_S)


def _cli(runs: int, progress: Callable[[int], None]) -> list[float]:
    from storage import get_run, list_runs

    with tempfile.TemporaryDirectory(prefix="budgetflow-bench-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'runs.db'}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        argv = [sys.executable, "-m", "budgetflow", "--db", db, "run", str(CHAIN), "--no-progress"]
        argv += ["--deadline", str(CHAIN_DEADLINE_S)]
        done = 0
        while done < runs:
            batch = [
                subprocess.Popen(
                    [*argv, "--seed", str(done + i)],
                    cwd=tmp,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for i in range(min(2, runs - done))
            ]
            for process in batch:
                _, err = process.communicate(timeout=300)
                if b"Traceback" in err:
                    raise RuntimeError(err.decode())
            done += len(batch)
            progress(done)
        overshoots = []
        for summary in list_runs(db, limit=runs):
            run = get_run(db, summary.run_id).run
            assert run.ended_at is not None
            overshoots.append((run.ended_at - run.started_at).total_seconds() - CHAIN_DEADLINE_S)
        return overshoots


async def _vllm_runs(runs: int, progress: Callable[[int], None]) -> list[float]:
    sys.path.insert(0, str(REPO / "scripts"))
    vllm_replicas = importlib.import_module("vllm_replicas")

    from orchestrator import PoolSpec
    from orchestrator.litellm_client import LiteLLMClient
    from orchestrator.pool import PooledLiteLLMCaller

    options = vllm_replicas.ReplicaOptions(
        kv_blocks=256, block_size=32, max_model_len=4096, decode_delay=True
    )
    replicas = vllm_replicas.VLLMReplicas(2, options=options)
    await asyncio.to_thread(replicas.start)
    try:
        pool = PoolSpec(
            name="tiny",
            served_model=options.served_model,
            replicas=tuple(replicas.urls),
            block_size_tokens=32,
        )
        model = ModelSpec(
            name="tiny",
            litellm_model="hosted_vllm/tiny-llama",
            input_price_per_mtok="0.10",
            output_price_per_mtok="0.40",
            context_window=4096,
            pool="tiny",
        )
        catalog = Catalog.of(model, pools=(pool,))
        wf = Workflow("pooled", inputs=["topic"])
        wf.subtask("review", LLMAgent(prompt="Review {topic}."), models=["tiny"], max_tokens=3500)
        overshoots = []
        for i in range(runs):
            slow = PooledLiteLLMCaller(
                pool, extra_body={"ignore_eos": True, "vllm_xargs": {"decode_delay_ms": 10}}
            )
            client = LiteLLMClient(catalog, pool_callers={"tiny": slow})
            try:
                result = await arun(
                    wf,
                    catalog=catalog,
                    budget_usd="0.05",
                    deadline_s=CHAIN_DEADLINE_S,
                    inputs={"topic": f"plan {i}"},
                    policy="fixed:tiny:2",
                    client=client,
                )
            finally:
                await client.aclose()
            overshoots.append(_overshoot(result, CHAIN_DEADLINE_S))
            progress(i + 1)
        return overshoots
    finally:
        await asyncio.to_thread(replicas.stop)


async def _big(seed: int) -> float:
    from policies.dag_pool import pool_workflow
    from policies.synthetic import layered_limits, layered_problem

    problem = layered_problem(2000, seed=seed)
    workflow, catalog = pool_workflow(problem)
    budget, _ = layered_limits(problem, budget_factor=2.0, deadline_factor=1.5)
    result = await arun(
        workflow, catalog=catalog, budget_usd=budget, deadline_s=BIG_DEADLINE_S, policy="mcpp", seed=seed
    )
    return _overshoot(result, BIG_DEADLINE_S)


def _summary(label: str, overshoots: list[float]) -> dict[str, Any]:
    ms = sorted(o * 1000 for o in overshoots)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))]

    return {
        "path": label,
        "runs": len(ms),
        "overshoot_ms_p50": statistics.median(ms),
        "overshoot_ms_p90": pct(0.90),
        "overshoot_ms_p99": pct(0.99),
        "overshoot_ms_max": ms[-1],
        "within_1s": sum(1 for m in ms if m <= 1000) / len(ms),
        "overshoots_ms_in_run_order": [round(o * 1000, 1) for o in overshoots],
    }


def main(argv: list[str] | None = None) -> int:
    """Measure the chosen paths, print a table, write JSON; return 0."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--paths", default="inflight,sim,cli,big", help="comma-separated: inflight,sim,cli,vllm,big"
    )
    parser.add_argument(
        "--runs", type=int, default=50, help="runs per path (inflight: per width; big: a tenth)"
    )
    parser.add_argument("--out", default="benchmarks/results/deadline.json")
    args = parser.parse_args(argv)
    console = Console()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    started = time.monotonic()

    def say(label: str) -> Callable[[int], None]:
        return lambda n: console.print(f"  {label}: {n} run(s)", highlight=False)

    for path in paths:
        console.print(f"[bold]{path}[/]")
        if path == "inflight":
            for samples in (1, 10, 100, 1000):
                overs = [asyncio.run(_inflight(samples, seed)) for seed in range(min(args.runs, 20))]
                rows.append(_summary(f"inflight x{samples}", overs))
        elif path == "sim":
            overs = []
            for seed in range(args.runs):
                overs.append(asyncio.run(_sim(seed)))
                if (seed + 1) % 10 == 0:
                    say("sim")(seed + 1)
            rows.append(_summary("sim (arun, litellm)", overs))
        elif path == "cli":
            rows.append(_summary("cli (budgetflow run, 2 at once)", _cli(args.runs, say("cli"))))
        elif path == "vllm":
            rows.append(_summary("vllm (2 replicas)", asyncio.run(_vllm_runs(args.runs, say("vllm")))))
        elif path == "big":
            overs = [asyncio.run(_big(seed)) for seed in range(max(1, args.runs // 10))]
            rows.append(_summary("mcpp, 2,000 subtasks", overs))
        else:
            parser.error(f"unknown path `{path}`; choose from inflight, sim, cli, vllm, big")
    table = Table(title="run end minus deadline (real clock), ms")
    for col in ("path", "runs", "p50", "p90", "p99", "max", "within 1 s"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for r in rows:
        table.add_row(
            r["path"],
            str(r["runs"]),
            f"{r['overshoot_ms_p50']:.0f}",
            f"{r['overshoot_ms_p90']:.0f}",
            f"{r['overshoot_ms_p99']:.0f}",
            f"{r['overshoot_ms_max']:.0f}",
            f"{r['within_1s']:.0%}",
        )
    console.print(table)
    load = os.getloadavg()
    console.print(
        f"load average before {load_before[0]:.2f}, after {load[0]:.2f}; {time.monotonic() - started:.0f} s"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average": {"before": load_before, "after": load},
                "command": "benchmarks/bench_deadline.py "
                + " ".join(argv if argv is not None else sys.argv[1:]),
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
