"""`budgetflow run`: a run with the SQL recorder, the live view and a closing summary."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from budgetflow.progress import ProgressView
from budgetflow.settings import Settings
from budgetflow.show import usd
from orchestrator.catalog import Catalog
from orchestrator.fanout_recorder import FanoutRecorder
from orchestrator.ledger import InProcessLedger, Ledger, usd_to_nano
from orchestrator.run import RunResult, arun
from orchestrator.workflow import Workflow

__all__ = ["execute"]


def _ensure_sqlite_dir(url: str) -> None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != "sqlite:///:memory:":
        Path(url[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)


async def execute(
    workflow: Workflow,
    *,
    catalog: Catalog,
    settings: Settings,
    budget_usd: Decimal,
    deadline_s: float | None,
    inputs: Mapping[str, Any],
    policy: str,
    seed: int,
    time_scale: float,
    console: Console,
    live: bool,
    learn: bool,
    route: Callable[[Catalog, Settings], tuple[Catalog, list[str]]],
) -> RunResult:
    """Run, record to the settings' database, draw progress, print a summary."""
    from storage import SqlRecorder

    if any(not m.priced for m in catalog.models.values()):
        catalog = catalog.resolve_prices()
    routed, simulated = route(catalog, settings)
    if simulated:
        console.print(
            f"[bold yellow]SIMULATED[/] models {', '.join(simulated)}: no API key or vLLM URL was given,"
            " so the seeded simulated backend answers for them (same names and prices)."
        )
    _ensure_sqlite_dir(settings.database_url)
    sql = await SqlRecorder.open(settings.database_url, record_content=settings.record_content)
    learned = {}
    if learn:
        from storage import learn_estimates

        learned = await asyncio.to_thread(learn_estimates, sql.engine, workflow.name)
        if learned:
            console.print(
                f"planner estimates learned from recorded runs for {len(learned)} (subtask, model) pairs"
                f" ({sum(len(e.samples) for e in learned.values())} attempts); priors for the rest"
            )
    run_id = uuid.uuid4().hex[:12]
    ledger: Ledger
    redis_client = None
    if settings.redis_url:
        # A budget shared by every process that works on this run.
        from redis.asyncio import Redis

        from storage import RedisLedger

        redis_client = Redis.from_url(settings.redis_url)
        ledger = await RedisLedger.create(redis_client, run_id, usd_to_nano(budget_usd))
        console.print(f"ledger: Redis at {settings.redis_url} (shared across workers)")
    else:
        ledger = InProcessLedger(usd_to_nano(budget_usd))
    view = ProgressView(
        console,
        subtasks=list(workflow.topological_order()),
        ledger=ledger,
        budget_usd=budget_usd,
        deadline_s=deadline_s,
        simulated=simulated,
        live=live,
    )
    try:
        result = await arun(
            workflow,
            catalog=routed,
            budget_usd=budget_usd,
            deadline_s=deadline_s,
            inputs=inputs,
            policy=policy,
            seed=seed,
            recorder=FanoutRecorder(sql, view),
            ledger=ledger,
            record_content=settings.record_content,
            sim_time_scale=time_scale,
            learned_estimates=learned,
            run_id=run_id,
        )
    finally:
        await view.aclose()
        await sql.aclose()
        if redis_client is not None:
            await redis_client.aclose()
    _summary(result, budget_usd, deadline_s, console, settings.database_url)
    return result


def _summary(result: RunResult, budget: Decimal, deadline: float | None, console: Console, db: str) -> None:
    style = "green" if result.outcome.value == "completed" else "red"
    console.print()
    table = Table(show_header=False, box=None)
    table.add_row("run", result.run_id)
    table.add_row("outcome", f"[{style}]{result.outcome.value}[/]")
    if result.run.reason:
        table.add_row("reason", result.run.reason)
    table.add_row(
        "spent", f"${result.spent_usd:.6f} of ${usd(budget)} ({float(result.spent_usd / budget):.1%})"
    )
    table.add_row("makespan", f"{result.makespan_s:.2f}s" + (f" of {deadline:g}s" if deadline else ""))
    llm_calls = sum(1 for c in result.calls if c.kind.value == "llm")
    table.add_row("attempts / calls", f"{len(result.attempts)} / {llm_calls}")
    table.add_row("decisions", str(len(result.decisions)))
    console.print(table)
    console.print(f"[dim]calling tree: budgetflow --db {db} runs show {result.run_id}[/]")
