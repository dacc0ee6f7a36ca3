"""A real load for the Grafana board: workflows run in one process that serves `/metrics`.

```
.venv/bin/python -m benchmarks.board_load --metrics-port 9464 --seconds 20 \\
    [--pool-replicas http://127.0.0.1:8001 http://127.0.0.1:8002 --pool-model tiny-llama] \\
    [--redis-url redis://127.0.0.1:6379/0]
```

Built like `budgetflow run` builds a run (`budgetflow.services`: the metrics server, the
model clients, the pool clients whose routers the metrics read), with the example
workflows on the seeded simulated backend (never a paid provider, whatever keys are
set) and, given replicas, a workflow on a vLLM pool. Each round starts, at once:

| run | what it shows on the board |
|---|---|
| `code-pipeline`, $0.05, 45 s, `mcpp` | completed runs, the cheap model |
| `hard-step`, $0.20, 90 s, `mcpp` | the strong model (`port` goes to `4o`) |
| `code-pipeline`, $0.008, `always_cheapest` | budget thresholds crossed |
| `code-pipeline`, deadline 1 s | a deadline exceeded (and how far past it the run ended) |
| `pool-summaries` on the pool, if replicas are given | pool routing, prefix-cache hits, replica errors |
| with `--redis-url`, the first run above under the team budget `board-team` ($0.02) | shared budgets |

The model clients are prepared first (litellm's import takes seconds), and the first
round waits for a first scrape of `/metrics` (at most `--scrape-wait-s`), as a long-lived
process is in Prometheus' view before its runs. Rounds start every `--round-s` seconds
until `--seconds` have passed; then the process waits for the runs in flight and for one
more scrape, and exits. It prints `metrics: URL` once it serves, and a JSON summary of
the runs at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from agents import LLMAgent
from budgetflow.loader import route_catalog
from budgetflow.services import ServedMetrics, default_client, open_metrics, pool_callers, resolve_policy
from budgetflow.settings import Settings
from examples import code_pipeline, hard_step
from orchestrator.catalog import Catalog, ModelSpec, PoolSpec
from orchestrator.estimates import AttemptEstimate, LogNormal
from orchestrator.ledger import usd_to_nano
from orchestrator.model_client import ModelClient
from orchestrator.pool import PoolRouter
from orchestrator.run import arun
from orchestrator.workflow import Workflow
from storage.shared_budgets import BudgetScope, SharedBudget
from storage.shared_ledger import SharedBudgetLedger

__all__ = ["LoadConfig", "main", "pool_workflow", "run_load"]

POOL_WORKFLOW = "pool-summaries"
SHARED_BUDGET = "board-team"
"""The shared budget of the runs under one (`--redis-url`)."""
SHARED_LIMIT_USD = Decimal("0.02")
"""Its limit: a few rounds cross its thresholds, then its runs end `budget_exhausted`."""
_SYSTEM = "You write short, plain technical summaries for engineers. " + " ".join(
    f"Rule {i}: keep sentence {i} under twenty words and name one concrete thing." for i in range(24)
)


@dataclass(frozen=True, kw_only=True)
class LoadConfig:
    """What to run."""

    seconds: float = 20.0
    """Start rounds for this long."""
    round_s: float = 2.0
    """Seconds between the starts of two rounds."""
    time_scale: float = 0.05
    """Speed of simulated latencies (0.05: twenty times faster than the priors say)."""
    pool_replicas: tuple[str, ...] = ()
    """Base URLs of vLLM (or vLLM-compatible) replicas for the pool workflow; none: no pool runs."""
    pool_model: str = "stub-model"
    """The model name the replicas serve."""
    scrape_wait_s: float = 10.0
    """How long to wait for a first scrape before the load, and for a last one after it."""
    seed: int = 0
    """Seed of the first round (each round adds one)."""
    redis_url: str | None = None
    """Redis for the shared team budget; `None`: no run is under a shared budget."""


def pool_workflow() -> Workflow:
    """An outline, then three sections of it, on the pool's model (`local`), with a shared system prompt."""
    est = AttemptEstimate(
        success_prob=0.95,
        output_tokens=LogNormal(mean=16, std=4),
        latency_s=LogNormal(mean=0.5, std=0.1),
        input_tokens=400,
    )
    wf = Workflow(POOL_WORKFLOW, inputs=["topic"])
    outline = wf.subtask(
        "outline",
        LLMAgent(system=_SYSTEM, prompt="Outline: {topic}"),
        models=["local"],
        estimates={"local": est},
    )
    for part in ("design", "risks", "rollout"):
        wf.subtask(
            part,
            LLMAgent(system=_SYSTEM, prompt=f"Write the {part} section for this outline:\n{{outline}}"),
            after=[outline],
            models=["local"],
            estimates={"local": est},
        )
    return wf


def _pool_catalog(config: LoadConfig) -> Catalog:
    return Catalog.of(
        ModelSpec(
            name="local",
            litellm_model=f"hosted_vllm/{config.pool_model}",
            input_price_per_mtok=Decimal("0.02"),
            output_price_per_mtok=Decimal("0.05"),
            pool="local",
            tier="cheap",
        ),
        pools=(
            PoolSpec(
                name="local",
                served_model=config.pool_model,
                replicas=config.pool_replicas,
                kv_capacity_tokens=16 * 1024,
            ),
        ),
    )


@dataclass(frozen=True, kw_only=True)
class _Kind:
    workflow: Workflow
    catalog: Catalog
    inputs: Mapping[str, Any]
    budget_usd: Decimal
    deadline_s: float | None
    policy: str
    shared: bool = False
    """Under the shared team budget (with `--redis-url`)."""


def _kinds(config: LoadConfig) -> list[_Kind]:
    simulated, _ = route_catalog(code_pipeline.catalog, Settings())  # no keys: all simulated
    hard, _ = route_catalog(hard_step.catalog, Settings())
    kinds = [
        _Kind(
            workflow=code_pipeline.workflow,
            catalog=simulated,
            inputs=code_pipeline.inputs,
            budget_usd=Decimal("0.05"),
            deadline_s=45.0,
            policy="mcpp",
            shared=config.redis_url is not None,
        ),
        _Kind(
            workflow=hard_step.workflow,
            catalog=hard,
            inputs=hard_step.inputs,
            budget_usd=Decimal("0.20"),
            deadline_s=90.0,
            policy="mcpp",
        ),
        _Kind(
            workflow=code_pipeline.workflow,
            catalog=simulated,
            inputs=code_pipeline.inputs,
            budget_usd=Decimal("0.008"),
            deadline_s=45.0,
            policy="always_cheapest",
        ),
        _Kind(
            workflow=code_pipeline.workflow,
            catalog=simulated,
            inputs=code_pipeline.inputs,
            budget_usd=Decimal("0.05"),
            deadline_s=1.0,
            policy="mcpp",
        ),
    ]
    if config.pool_replicas:
        kinds.append(
            _Kind(
                workflow=pool_workflow(),
                catalog=_pool_catalog(config),
                inputs={"topic": "moving a service's queue from Redis lists to streams"},
                budget_usd=Decimal("0.01"),
                deadline_s=60.0,
                policy="mcpp",
            )
        )
    return kinds


async def run_load(config: LoadConfig, served: ServedMetrics) -> dict[str, Any]:
    """Run rounds of the workflows for `config.seconds`, each run observed by `served`'s metrics.

    One model client per workflow serves all its runs (a pool client per pool per process,
    as a long-lived process has), so the pool's routers see every pool run.
    """
    kinds = _kinds(config)
    clients: dict[str, ModelClient] = {}
    routers: list[PoolRouter] = []
    for kind in kinds:
        if kind.workflow.name in clients:
            continue
        pools = pool_callers(kind.workflow, kind.catalog)
        routers.extend(caller.router for caller in pools.values())
        clients[kind.workflow.name] = default_client(
            kind.workflow, kind.catalog, seed=config.seed, sim_time_scale=config.time_scale, pools=pools
        )
    for client in clients.values():
        await client.prepare()
    outcomes: Counter[str] = Counter()
    redis = None if config.redis_url is None else Redis.from_url(config.redis_url)
    team = SharedBudget(
        budget_id=secrets.token_hex(8),
        name=SHARED_BUDGET,
        scope=BudgetScope(kind="team", value="board"),
        limit_nano=usd_to_nano(SHARED_LIMIT_USD),
    )

    async def one(kind: _Kind, seed: int) -> None:
        ledger: SharedBudgetLedger | None = None
        run_id = uuid.uuid4().hex[:12]
        if kind.shared and redis is not None:
            budget_nano = usd_to_nano(kind.budget_usd)
            ledger = await SharedBudgetLedger.create(redis, run_id, budget_nano, budgets=[team])
        with contextlib.ExitStack() as watching:
            if ledger is not None:
                watching.enter_context(served.metrics.watch_budgets(ledger.budget_views))
            result = await arun(
                kind.workflow,
                catalog=kind.catalog,
                client=clients[kind.workflow.name],
                policy=resolve_policy(kind.policy, seed),
                budget_usd=kind.budget_usd,
                deadline_s=kind.deadline_s,
                inputs=kind.inputs,
                seed=seed,
                observers=[served.metrics.observer(catalog=kind.catalog)],
                ledger=ledger,
                run_id=run_id,
            )
        shared = " (shared budget)" if ledger is not None else ""
        outcomes[f"{kind.workflow.name}{shared}: {result.outcome.value}"] += 1

    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    try:
        with served.metrics.watch_pools(routers):
            seed = config.seed
            while time.monotonic() - started < config.seconds:
                tasks.extend(asyncio.create_task(one(kind, seed)) for kind in kinds)
                seed += 1
                await asyncio.sleep(config.round_s)
            await asyncio.gather(*tasks)
    finally:
        for client in clients.values():
            await client.aclose()
        if redis is not None:
            await redis.aclose()
    return {
        "runs": len(tasks),
        "outcomes": dict(sorted(outcomes.items())),
        "wall_s": time.monotonic() - started,
    }


async def _main(config: LoadConfig, settings: Settings) -> dict[str, Any]:
    async with open_metrics(settings) as served:
        assert served is not None
        print(f"metrics: {served.server.url}", flush=True)
        first = served.server.scrapes > 0 or await served.server.wait_for_scrape(config.scrape_wait_s)
        summary = await run_load(config, served)
        summary["first_scrape"] = first
        if served.server.scrapes:
            summary["final_scrape"] = await served.server.wait_for_scrape(config.scrape_wait_s)
        summary["scrapes"] = served.server.scrapes
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Serve metrics, run the load, print a JSON summary. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--metrics-port", type=int, default=9464, help="port of /metrics (0: a free one)")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address of /metrics")
    parser.add_argument(
        "--seconds", type=float, default=LoadConfig.seconds, help="start rounds for this long"
    )
    parser.add_argument("--round-s", type=float, default=LoadConfig.round_s, help="seconds between rounds")
    parser.add_argument("--time-scale", type=float, default=LoadConfig.time_scale, help="simulated speed")
    parser.add_argument(
        "--pool-replicas", nargs="*", default=[], metavar="URL", help="vLLM replica base URLs"
    )
    parser.add_argument("--pool-model", default=LoadConfig.pool_model, help="model name the replicas serve")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first round")
    parser.add_argument(
        "--scrape-wait-s",
        type=float,
        default=LoadConfig.scrape_wait_s,
        help="wait this long at most for a first scrape before the load and a last one after it",
    )
    parser.add_argument(
        "--redis-url", default=None, help=f"Redis for runs under the shared budget `{SHARED_BUDGET}`"
    )
    args = parser.parse_args(argv)
    config = LoadConfig(
        seconds=args.seconds,
        round_s=args.round_s,
        time_scale=args.time_scale,
        pool_replicas=tuple(args.pool_replicas),
        pool_model=args.pool_model,
        seed=args.seed,
        scrape_wait_s=args.scrape_wait_s,
        redis_url=args.redis_url,
    )
    settings = Settings(metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    summary = asyncio.run(_main(config, settings))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
