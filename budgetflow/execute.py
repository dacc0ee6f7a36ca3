"""`budgetflow run`: a run with the SQL recorder, the live view and a closing summary.

The summary is printed however the run ends, also when SIGINT or SIGTERM
cancelled it (the executor then records it as `cancelled`), from the final
record the progress view kept.

With a metrics port set, `/metrics` is served while the run goes. When a scraper
read it during the run, the command waits for one more scrape after the run ended
(at most `FINAL_SCRAPE_WAIT_S`), so the run's outcome reaches Prometheus too.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents.function import FunctionAgent
from budgetflow._format import command, outcome_text, spend_text
from budgetflow.progress import ProgressView
from budgetflow.services import (
    ServedMetrics,
    default_client,
    open_metrics,
    open_run_services,
    pool_callers,
    resolve_policy,
)
from budgetflow.settings import Settings
from orchestrator.catalog import Catalog
from orchestrator.events import Observer
from orchestrator.records import Outcome, RunRecord
from orchestrator.resume import ResumePoint
from orchestrator.run import arun
from orchestrator.workflow import Workflow

__all__ = ["FINAL_SCRAPE_WAIT_S", "execute"]

FINAL_SCRAPE_WAIT_S = 30.0
"""How long a finished run waits for a last scrape of its metrics (when they were being scraped)."""


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
    estimator_version: int | None = None,
    explore: bool = False,
    route: Callable[[Catalog, Settings], tuple[Catalog, list[str]]],
    resume: ResumePoint | None = None,
) -> RunRecord:
    """Run, record to the settings' database, draw progress, print a summary; return the run's record.

    With `resume`, the recorded run continues (`orchestrator.resume`): its id, budget,
    deadline, inputs and seed are the recorded ones.

    Raises:
        asyncio.CancelledError: the run was cancelled (by a signal); it was recorded as
            `cancelled` and its summary printed first.
    """
    if any(not m.priced for m in catalog.models.values()):
        catalog = catalog.resolve_prices()
    routed, simulated = route(catalog, settings)
    if simulated:
        console.print(
            f"[bold yellow]SIMULATED[/] models {', '.join(simulated)}: no API key or vLLM URL was given,"
            " so the seeded simulated backend answers for them (same names and prices)."
        )
    async with open_metrics(settings) as served:
        if served is not None:
            console.print(f"metrics: {served.server.url}", highlight=False)
        run = await _execute(
            workflow,
            routed=routed,
            settings=settings,
            budget_usd=budget_usd,
            deadline_s=deadline_s,
            inputs=inputs,
            policy=policy,
            seed=seed,
            time_scale=time_scale,
            console=console,
            live=live,
            learn=learn,
            estimator_version=estimator_version,
            explore=explore,
            simulated=simulated,
            served=served,
            resume=resume,
        )
        if served is not None and served.server.scrapes:
            console.print(
                f"metrics: waiting up to {FINAL_SCRAPE_WAIT_S:g} s for a last scrape of {served.server.url}"
                " (Ctrl-C skips)",
                style="dim",
                highlight=False,
            )
            await served.server.wait_for_scrape(FINAL_SCRAPE_WAIT_S)
    return run


async def _execute(
    workflow: Workflow,
    *,
    routed: Catalog,
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
    estimator_version: int | None = None,
    explore: bool = False,
    simulated: list[str],
    served: ServedMetrics | None,
    resume: ResumePoint | None = None,
) -> RunRecord:
    """The run itself, with the progress view and the closing summary."""
    run_id = uuid.uuid4().hex[:12] if resume is None else resume.run.run_id
    view: ProgressView | None = None
    try:
        async with open_run_services(
            settings,
            workflow=workflow,
            catalog=routed,
            budget_usd=budget_usd,
            run_id=run_id,
            learn=learn,
            estimator_version=estimator_version,
            explore_seed=seed if explore else None,
            spent_nano=None if resume is None else resume.spent_nano,
        ) as services:
            for note in services.notes:
                console.print(note, highlight=False)
            view = ProgressView(
                console,
                subtasks=list(workflow.topological_order()),
                budget_usd=budget_usd,
                deadline_s=deadline_s,
                simulated=simulated,
                live=live,
                stop_hint="Ctrl-C stops it and records it as cancelled",
                functions=frozenset(
                    n for n, s in workflow.subtasks.items() if isinstance(s.agent, FunctionAgent)
                ),
            )
            pools = pool_callers(workflow, routed)
            client = default_client(workflow, routed, seed=seed, sim_time_scale=time_scale, pools=pools)
            observers: list[Observer] = [view]
            watching: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if served is not None:
                observers.append(served.metrics.observer(catalog=routed))
                watching = contextlib.ExitStack()
                watching.enter_context(served.metrics.watch_pools(caller.router for caller in pools.values()))
                watching.enter_context(served.metrics.watch_budgets(services.budget_views))
            try:
                with watching:
                    result = await arun(
                        workflow,
                        catalog=routed,
                        client=client,
                        policy=services.wrap_policy(resolve_policy(policy, seed)),
                        budget_usd=budget_usd,
                        deadline_s=deadline_s,
                        inputs=inputs,
                        seed=seed,
                        recorder=services.recorder,
                        ledger=services.ledger,
                        observers=observers,
                        interceptors=services.interceptors,
                        record_content=settings.record_content,
                        estimator=services.estimator,
                        run_id=run_id,
                        resume=resume,
                    )
            finally:
                await client.aclose()
    except asyncio.CancelledError:
        if view is not None:
            await view.aclose()
        if view is not None and view.finished:
            _summary(view, deadline_s, console, settings)
        else:
            console.print("stopped before the run started; nothing was recorded", style="magenta")
        raise
    finally:
        if view is not None:
            await view.aclose()
    assert view is not None
    _summary(view, deadline_s, console, settings)
    return result.run


def _summary(view: ProgressView, deadline: float | None, console: Console, settings: Settings) -> None:
    run = view.run
    if run is None:  # pragma: no cover - a finished view always holds its run
        return
    console.print()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("run", run.run_id)
    table.add_row("outcome", outcome_text(run.outcome.value))
    if run.reason:
        table.add_row("reason", Text(run.reason))
    table.add_row("spent", spend_text(run.spent_usd, run.budget_usd, run.overrun_usd))
    makespan = run.makespan_s or 0.0
    table.add_row("makespan", f"{makespan:.2f}s" + (f" of {deadline:g}s" if deadline else ""))
    table.add_row("attempts", str(view.attempts))
    table.add_row("model calls", f"{view.model_calls} (retries included)")
    table.add_row("decisions", str(view.decisions))
    console.print(table)
    if run.outcome is Outcome.CANCELLED:
        console.print("the run was stopped; what it spent and recorded is kept", style="magenta")
    console.print("calling tree:", style="dim")
    hint = command(settings, "runs", "show", run.run_id)
    head, sep, db = hint.partition(" --db ")
    if sep and len(hint) + 2 > console.width:
        # One shell command on two lines, so that the id is never split and it still pastes.
        console.print(f"  {head} \\", style="dim", highlight=False)
        console.print(f"    --db {db}", style="dim", highlight=False, soft_wrap=True)
    else:
        console.print(f"  {hint}", style="dim", highlight=False, soft_wrap=True)
