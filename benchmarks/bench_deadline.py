"""How long after its deadline does a run end? (real clock, in-flight calls cancelled)

    .venv/bin/python benchmarks/bench_deadline.py [--repeats 20] [--out benchmarks/results/deadline.json]

Each run starts N parallel samples of a simulated call that would take 60 s,
with a 0.3 s deadline; the run must cancel all of them, record and settle
each, and return. Overshoot = time the run returned - deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import LLMAgent
from orchestrator import AttemptEstimate, Catalog, LogNormal, ModelSpec, Workflow, arun
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from policies.baselines import FixedModel

DEADLINE_S = 0.3


async def _one(samples: int, seed: int) -> tuple[float, str]:
    catalog = Catalog.of(
        ModelSpec(name="m", litellm_model="budgetflow-sim/m", input_price_per_mtok=0, output_price_per_mtok=1)
    )
    est = AttemptEstimate(success_prob=1.0, output_tokens=LogNormal(mean=100), latency_s=LogNormal(mean=60.0))
    wf = Workflow("slow")
    wf.subtask("s", LLMAgent(prompt="x"), models=["m"], estimates={"m": est})
    client = SimulatedClient(SimulatedBackend({("s", "m"): est}, seed=seed))
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await arun(
        wf,
        catalog=catalog,
        budget_usd=100,
        deadline_s=DEADLINE_S,
        policy=FixedModel(model="m", samples=samples),
        client=client,
        seed=seed,
    )
    return loop.time() - start - DEADLINE_S, result.outcome.value


def main(argv: list[str] | None = None) -> int:
    """Measure and print; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/deadline.json")
    args = parser.parse_args(argv)
    rows = []
    for samples in (1, 10, 100, 1000):
        overshoots = []
        for rep in range(args.repeats):
            over, outcome = asyncio.run(_one(samples, rep))
            assert outcome == "deadline_exceeded", outcome
            overshoots.append(over * 1000)
        overshoots.sort()
        rows.append(
            {
                "in_flight_calls": samples,
                "overshoot_ms_p50": statistics.median(overshoots),
                "overshoot_ms_p99": overshoots[min(len(overshoots) - 1, int(0.99 * len(overshoots)))],
                "overshoot_ms_max": overshoots[-1],
                "repeats": args.repeats,
            }
        )
    table = Table(title=f"run end after a {DEADLINE_S}s deadline (real clock)")
    for col in ("in-flight calls", "overshoot p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["in_flight_calls"]),
            f"{r['overshoot_ms_p50']:.1f}",
            f"{r['overshoot_ms_p99']:.1f}",
            f"{r['overshoot_ms_max']:.1f}",
        )
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": platform.platform(), "deadline_s": DEADLINE_S, "rows": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
