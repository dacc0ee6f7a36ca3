"""`budgetflow runs mark-abandoned`: close runs whose process died.

A run whose process was killed (SIGKILL, a crash, a lost machine) stays
`running` in the database; once its heartbeat is older than
`storage.abandoned.ABANDONED_AFTER_S` the readers show it as `abandoned`. This
command closes such runs for good: outcome `abandoned`, spend = what their
recorded calls cost, unfinished attempts and subtasks `cancelled`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from budgetflow._format import command, money
from budgetflow.settings import Settings
from orchestrator.errors import ConfigError

__all__ = ["mark_abandoned"]


def mark_abandoned(
    settings: Settings, console: Console, *, run_ids: Sequence[str], older_than_s: float | None
) -> int:
    """Close the abandoned runs among `run_ids` (all of them when empty); print what was closed."""
    from budgetflow.show import missing_database
    from storage import abandoned, queries
    from storage._engine import redact

    url = settings.database_url
    stale_after = abandoned.ABANDONED_AFTER_S if older_than_s is None else older_than_s
    missing = missing_database(url)
    if missing is not None:
        console.print(f"no runs recorded in `{missing}` yet (the file does not exist); nothing to close")
        return 0
    wanted = [queries.resolve_run_id(url, run_id) for run_id in run_ids] if run_ids else None
    if wanted:
        stale = {run.run_id for run in abandoned.find_abandoned(url, stale_after_s=stale_after)}
        for run_id in wanted:
            if run_id not in stale:
                detail = queries.get_run(url, run_id)
                state = detail.run.outcome.value
                raise ConfigError(
                    f"run `{run_id}` is not abandoned: it is `{state}`"
                    + (
                        f" and sent a heartbeat less than {stale_after:g}s ago; if its process is"
                        " really gone, wait or pass a smaller --older-than"
                        if state == "running"
                        else "; only runs still `running` with no heartbeat can be closed"
                    )
                )
    closed = abandoned.mark_abandoned(url, stale_after_s=stale_after, run_ids=wanted)
    if not closed:
        console.print(
            f"no abandoned runs in `{redact(url)}`: no run is `running` without a heartbeat for"
            f" {stale_after:g}s",
            highlight=False,
        )
        return 0
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("run", no_wrap=True)
    table.add_column("workflow", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("last sign of life (UTC)", no_wrap=True)
    table.add_column("spent $", justify="right", no_wrap=True)
    for run in closed:
        seen = run.last_heartbeat or run.started_at
        table.add_row(run.run_id, run.workflow, seen.strftime("%Y-%m-%d %H:%M:%S"), f"{run.spent_usd:.6f}")
    console.print(
        f"closed {len(closed)} abandoned run{'s' if len(closed) != 1 else ''} as `abandoned`, each with"
        " the spend its recorded calls prove:",
        highlight=False,
    )
    console.print(table)
    total = sum((run.spent_usd for run in closed), start=Decimal(0))
    console.print(
        f"spent in all: {money(total)}; calls in flight when a process died are not in it."
        f" Inspect one: {command(settings, 'runs', 'show', closed[0].run_id)}",
        style="dim",
        highlight=False,
    )
    return 0
