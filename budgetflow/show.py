"""`budgetflow runs list` and `budgetflow runs show`: reading recorded runs.

Run ids are always printed whole. `runs list` fits the terminal by dropping
columns (policy, budget, makespan; the date's year), never by cutting ids, and
`runs show` takes any unique prefix of an id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from budgetflow._format import OUTCOME_STYLE, command, money, outcome_text, plural, spend_text, usd
from budgetflow.settings import Settings
from orchestrator.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from storage.queries import CallNode, RunSummary

__all__ = ["WIDE_LIST", "list_runs", "missing_database", "show_run"]

WIDE_LIST = 125
"""From this many columns on, `runs list` shows every column."""


def missing_database(url: str) -> str | None:
    """The path of a SQLite database file that does not exist yet, else `None`."""
    from storage._engine import parse_database_url, sqlite_path

    path = sqlite_path(parse_database_url(url))
    return str(path) if path is not None and not path.exists() else None


def list_runs(settings: Settings, console: Console, *, limit: int, workflow: str | None) -> int:
    """Print recent runs, newest first."""
    from storage import queries
    from storage._engine import redact

    url = settings.database_url
    where = redact(url)
    missing = missing_database(url)
    if missing is not None:
        console.print(
            f"no runs recorded in `{missing}` yet (the file does not exist); start one with"
            f" `{command(settings, 'run', 'PATH.py')}`",
            highlight=False,
        )
        return 0
    runs = queries.list_runs(url, limit=limit, workflow=workflow)
    if not runs:
        if workflow is None:
            console.print(
                f"no runs recorded in `{where}` yet; start one with `{command(settings, 'run', 'PATH.py')}`",
                highlight=False,
            )
            return 0
        known = queries.workflow_names(url)
        listed = ", ".join(f"`{w}`" for w in known) or "none"
        raise ConfigError(
            f"no runs of workflow `{workflow}` in `{where}`{did_you_mean(workflow, known)}; workflows"
            f" with runs: {listed}"
        )
    console.print(f"runs in `{where}`, newest first", style="dim", highlight=False)
    console.print(_runs_table(runs, console.width))
    console.print(
        f"open one: {command(settings, 'runs', 'show', 'ID')} (a unique start of the id is enough)",
        style="dim",
        highlight=False,
    )
    return 0


def _runs_table(runs: Sequence[RunSummary], width: int) -> Table:
    """The run list, fitted to `width` by dropping columns; the run id is never cut."""
    wide = width >= WIDE_LIST
    overrun = any(r.overrun_usd > 0 for r in runs)
    cells: dict[str, list[Text]] = {"run": [], "workflow": [], "outcome": [], "spent $": []}
    for r in runs:
        name = Text(r.workflow)
        if r.simulated:
            name.append(" (sim)", style="yellow")
        cells["run"].append(Text(r.run_id))
        cells["workflow"].append(name)
        cells["outcome"].append(outcome_text(r.outcome.value))
        cells["spent $"].append(Text(f"{r.spent_usd:.6f}"))
        if overrun:
            shown = f"{r.overrun_usd:.6f}" if r.overrun_usd > 0 else ""
            cells.setdefault("overrun $", []).append(Text(shown, style="bold red"))
        if wide:
            cells.setdefault("policy", []).append(Text(r.policy))
            cells.setdefault("budget $", []).append(Text(usd(r.budget_usd)))
            makespan = "-" if r.makespan_s is None else f"{r.makespan_s:.2f}"
            cells.setdefault("makespan s", []).append(Text(makespan))
        cells.setdefault("model calls", []).append(Text(str(r.calls)))
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S" if wide else "%m-%d %H:%M")
        cells.setdefault("started (UTC)" if wide else "started", []).append(Text(started))
    order = ["run", "workflow", "policy", "outcome", "spent $", "overrun $", "budget $", "makespan s"]
    order += ["model calls", "started (UTC)", "started"]
    columns = [c for c in order if c in cells]

    def width_of(column: str) -> int:
        longest = max((t.cell_len for t in cells[column]), default=0)
        header = column.split() if column == "model calls" and not wide else [column]  # stacks when narrow
        return max(longest, *(len(word) for word in header))

    # Too narrow even so: drop the least needed columns until the name has 8 columns.
    for droppable in ("started", "model calls", "spent $"):
        needed = sum(width_of(c) for c in columns if c != "workflow") + 2 * (len(columns) - 1) + 8
        if needed > width and droppable in columns:
            columns.remove(droppable)
    fixed = sum(width_of(c) for c in columns if c != "workflow") + 2 * (len(columns) - 1)
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        if column == "workflow":
            table.add_column(
                column, no_wrap=True, overflow="ellipsis", width=max(8, min(width_of(column), width - fixed))
            )
            continue
        column_width = width_of(column)
        header = column if len(column) <= column_width else column.replace(" ", "\n")
        right = column.endswith(("$", " s", "calls"))
        table.add_column(header, justify="right" if right else "left", no_wrap=True, width=column_width)
    for i in range(len(runs)):
        table.add_row(*(cells[c][i] for c in columns))
    return table


def show_run(settings: Settings, run_id: str, console: Console) -> int:
    """Print one run: header, subtasks, and the calling tree with cost and latency per node."""
    from storage import queries
    from storage._engine import redact

    url = settings.database_url
    missing = missing_database(url)
    if missing is not None:
        raise ConfigError(
            f"no run `{run_id}`: no runs are recorded in `{missing}` yet (the file does not exist);"
            " pass the database the run was recorded in with --db"
        )
    try:
        full_id = queries.resolve_run_id(url, run_id)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (database `{redact(url)}`)") from None
    detail = queries.get_run(url, full_id)
    tree_data = queries.build_call_tree(detail)
    run = detail.run
    header = Table(show_header=False, box=None, pad_edge=False)
    header.add_column(no_wrap=True)
    header.add_column(overflow="fold")
    header.add_row("run", Text(run.run_id).append("  SIMULATED" if run.simulated else "", style="yellow"))
    header.add_row("workflow", Text(run.workflow))
    header.add_row("policy", Text(f"{run.policy} (seed {run.seed})"))
    if run.beliefs:
        header.add_row("beliefs", Text(run.beliefs))
    header.add_row("outcome", outcome_text(run.outcome.value))
    if run.reason:
        header.add_row("reason", Text(run.reason))
    header.add_row("spent", spend_text(run.spent_usd, run.budget_usd, run.overrun_usd))
    deadline = f" of {run.deadline_s:g}s" if run.deadline_s else ""
    header.add_row("makespan", "-" if run.makespan_s is None else f"{run.makespan_s:.2f}s{deadline}")
    model_calls = sum(1 for c in detail.calls if c.kind.value == "llm")
    header.add_row("attempts", str(len(detail.attempts)))
    header.add_row("model calls", f"{model_calls} (retries included)")
    header.add_row("decisions", str(len(detail.decisions)))
    console.print(header)

    root = Tree(Text.assemble((run.workflow, "bold"), f"  {money(tree_data.cost_usd)}"))
    by_subtask: dict[str, Tree] = {}
    for sub in detail.subtasks:
        by_subtask[sub.subtask] = root.add(
            Text.assemble(
                (sub.subtask, "bold"),
                "  ",
                outcome_text(sub.status.value),
                f"  {plural(sub.attempts, 'attempt')}",
            )
        )
    for node in tree_data.attempts:
        a = node.attempt
        parent = by_subtask.get(a.subtask) or root.add(Text(a.subtask))
        latency = "-" if node.latency_s is None else f"{node.latency_s:.2f}s"
        calls = _model_calls(node.calls)
        who = a.model if calls else "no model call"
        label = Text(f"{who} #{a.batch}.{a.sample}  ")
        label.append_text(outcome_text(a.status.value))
        label.append(f"  {money(node.cost_usd)}  {latency}")
        if a.check_detail:
            label.append(f"  {a.check_detail}", style="dim")
        branch = parent.add(label)
        _add_calls(branch, _collapse_single_spans(node.calls))
    for call_node in tree_data.run_calls:
        _add_calls(root, (call_node,))
    console.print(root)
    return 0


def _model_calls(nodes: tuple[CallNode, ...]) -> int:
    return sum((n.call.kind.value == "llm") + _model_calls(n.children) for n in nodes)


def _collapse_single_spans(nodes: tuple[CallNode, ...]) -> tuple[CallNode, ...]:
    """An agent span with one call under it adds nothing to read: show the call in its place."""
    out: list[CallNode] = []
    for node in nodes:
        if node.call.kind.value == "agent" and len(node.children) == 1 and node.call.status.value == "ok":
            out.append(node.children[0])
        else:
            out.append(node)
    return tuple(out)


def _add_calls(branch: Tree, nodes: tuple[CallNode, ...]) -> None:
    for node in nodes:
        c = node.call
        label = Text(f"{c.kind.value} {c.model or ''}  ")
        label.append(c.status.value, style=OUTCOME_STYLE.get(c.status.value, ""))
        label.append(f"  {money(node.total_cost_usd)}  {c.latency_s:.2f}s")
        if c.ttft_s is not None:
            label.append(f" ttft {c.ttft_s:.2f}s")
        if c.kind.value == "llm":
            label.append(f"  in {c.input_tokens} out {c.output_tokens}")
            if c.cached_tokens:
                label.append(f" cached {c.cached_tokens}")
        if c.replica:
            label.append(f"  @{c.replica}")
        if c.retry:
            label.append(f"  retry {c.retry}")
        if c.error and c.status.value == "error":
            label.append(f"  {c.error}", style="red")
        sub = branch.add(label)
        _add_calls(sub, node.children)
