"""`budgetflow runs list` and `budgetflow runs show`: reading recorded runs."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

if TYPE_CHECKING:
    from storage.queries import CallNode

__all__ = ["list_runs", "show_run", "usd"]

_OUTCOME_STYLE = {
    "completed": "green",
    "running": "cyan",
    "budget_exhausted": "yellow",
    "deadline_exceeded": "yellow",
    "failed": "red",
    "cancelled": "magenta",
}


def list_runs(url: str, console: Console, *, limit: int, workflow: str | None) -> int:
    """Print recent runs, newest first."""
    from storage import queries

    runs = queries.list_runs(url, limit=limit, workflow=workflow)
    if not runs:
        console.print(f"no runs recorded in `{url}` yet; start one with `budgetflow run PATH.py`")
        return 0
    table = Table(title=f"runs in {url}")
    for col in (
        "run",
        "workflow",
        "policy",
        "outcome",
        "spent $",
        "budget $",
        "makespan s",
        "calls",
        "started",
    ):
        table.add_column(col, justify="right" if col.endswith(("$", "s", "calls")) else "left")
    for r in runs:
        style = _OUTCOME_STYLE.get(r.outcome.value, "")
        table.add_row(
            r.run_id,
            r.workflow + (" [yellow](sim)[/]" if r.simulated else ""),
            r.policy,
            f"[{style}]{r.outcome.value}[/]",
            f"{r.spent_usd:.6f}",
            usd(r.budget_usd),
            "-" if r.makespan_s is None else f"{r.makespan_s:.2f}",
            str(r.calls),
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)
    return 0


def show_run(url: str, run_id: str, console: Console) -> int:
    """Print one run: header, subtasks, and the calling tree with cost and latency per node."""
    from storage import queries

    detail = queries.get_run(url, run_id)
    tree_data = queries.build_call_tree(detail)
    run = detail.run
    style = _OUTCOME_STYLE.get(run.outcome.value, "")
    header = Table(show_header=False, box=None)
    header.add_row("run", run.run_id + ("  [yellow]SIMULATED[/]" if run.simulated else ""))
    header.add_row("workflow", run.workflow)
    header.add_row("policy", f"{run.policy} (seed {run.seed})")
    header.add_row(
        "outcome", f"[{style}]{run.outcome.value}[/]" + (f"  {escape(run.reason)}" if run.reason else "")
    )
    header.add_row("spent", f"${run.spent_usd:.6f} of ${usd(run.budget_usd)}")
    deadline = f" of {run.deadline_s:g}s" if run.deadline_s else ""
    header.add_row("makespan", "-" if run.makespan_s is None else f"{run.makespan_s:.2f}s{deadline}")
    header.add_row("decisions", str(len(detail.decisions)))
    console.print(header)

    root = Tree(f"[bold]{run.workflow}[/]  ${tree_data.cost_usd:.6f}")
    by_subtask: dict[str, Tree] = {}
    for sub in detail.subtasks:
        st = _OUTCOME_STYLE.get(sub.status.value, "")
        by_subtask[sub.subtask] = root.add(
            f"[bold]{sub.subtask}[/]  [{st}]{sub.status.value}[/]  attempts {sub.attempts}"
        )
    for node in tree_data.attempts:
        a = node.attempt
        parent = by_subtask.get(a.subtask) or root.add(a.subtask)
        st = {"passed": "green", "failed": "red", "error": "red", "cancelled": "magenta"}.get(
            a.status.value, ""
        )
        latency = "-" if node.latency_s is None else f"{node.latency_s:.2f}s"
        branch = parent.add(
            f"{a.model} #{a.batch}.{a.sample}  [{st}]{a.status.value}[/]  ${node.cost_usd:.6f}  {latency}"
            + (f"  [dim]{escape(a.check_detail or '')}[/]" if a.check_detail else "")
        )
        _add_calls(branch, _collapse_single_spans(node.calls))
    for call_node in tree_data.run_calls:
        _add_calls(root, (call_node,))
    console.print(root)
    return 0


def _collapse_single_spans(nodes: tuple[CallNode, ...]) -> tuple[CallNode, ...]:
    """An agent span with one call under it adds nothing to read: show the call in its place."""
    out: list[CallNode] = []
    for node in nodes:
        if node.call.kind.value == "agent" and len(node.children) == 1 and node.call.status.value == "ok":
            out.append(node.children[0])
        else:
            out.append(node)
    return tuple(out)


def usd(amount: Decimal) -> str:
    """`0.05` rather than `0.050000000`."""
    text = format(amount.normalize(), "f")
    return text


def _add_calls(branch: Tree, nodes: tuple[CallNode, ...]) -> None:
    for node in nodes:
        c = node.call
        ttft = f" ttft {c.ttft_s:.2f}s" if c.ttft_s is not None else ""
        tokens = f"  in {c.input_tokens} out {c.output_tokens}" + (
            f" cached {c.cached_tokens}" if c.cached_tokens else ""
        )
        replica = f"  @{c.replica}" if c.replica else ""
        retry = f"  retry {c.retry}" if c.retry else ""
        error = f"  [red]{escape(c.error)}[/]" if c.error and c.status.value == "error" else ""
        label = (
            f"{c.kind.value} {c.model or ''}  {c.status.value}  ${node.total_cost_usd:.6f}"
            f"  {c.latency_s:.2f}s{ttft}"
            + (tokens if c.kind.value == "llm" else "")
            + replica
            + retry
            + error
        )
        sub = branch.add(label)
        _add_calls(sub, node.children)
