"""One run as its dashboard page shows it: burn-down, attempts timeline, flame view, calling tree.

Everything is derived from what is recorded (`storage.RunDetail`): a call holds its
reservation from its start until it ends, then its cost is spent. A run still going
shows what is durable so far; the page refreshes as its events arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from markupsafe import Markup

from orchestrator.call_tree import AttemptNode, CallNode
from orchestrator.events import LedgerView
from orchestrator.records import AttemptStatus, CallKind, Outcome
from storage import RunDetail, build_call_tree
from web.dashboard._svg import FlameBox, Lane, Line, flame, lines, timeline

__all__ = ["RunView", "run_view"]

_SPENT, _RESERVED, _LEFT, _PROJECTED = "#e15759", "#f28e2b", "#4e79a7", "#9c755f"
_ATTEMPT_COLOURS = {
    "winner": "#59a14f",
    "passed": "#8cd17d",
    "failed": "#e15759",
    "error": "#b6992d",
    "cancelled": "#bab0ac",
    "running": "#4e79a7",
}


@dataclass(frozen=True, kw_only=True)
class RunView:
    """What the run page draws."""

    detail: RunDetail
    calls: int
    """Model calls (agent and check spans are not calls)."""
    live: bool
    reserved_usd: Decimal | None
    """Held by calls in flight now (a run going in this process), else `None`."""
    burndown: Markup
    timeline: Markup
    flame: Markup
    tree: tuple[AttemptNode, ...]
    run_calls: tuple[CallNode, ...]
    subtask_cost: dict[str, Decimal]
    winners: frozenset[str]


def _attempt_state(node: AttemptNode, winners: frozenset[str]) -> str:
    a = node.attempt
    if a.attempt_id in winners:
        return "winner"
    if a.status is AttemptStatus.RUNNING:
        return "running"
    if a.status is AttemptStatus.CANCELLED:
        return "cancelled"
    if a.check_passed is True:
        return "passed"
    if a.check_passed is False:
        return "failed"
    return "error"


def run_view(detail: RunDetail, *, live: bool, latest: tuple[float, LedgerView] | None = None) -> RunView:
    """The page's drawings for a recorded run; `latest`: the run time and money of its newest
    event, for a run going in this process (its calls in flight hold money not recorded yet)."""
    run = detail.run
    tree = build_call_tree(detail)
    winners = frozenset(s.winner_attempt_id for s in detail.subtasks if s.winner_attempt_id)
    llm = [c for c in detail.calls if c.kind is CallKind.LLM]
    end = max(
        [run.makespan_s or 0.0]
        + [c.started_s + c.latency_s for c in detail.calls]
        + [a.ended_s or a.started_s for a in detail.attempts]
    )
    if run.outcome is Outcome.RUNNING:
        end = max(end, (datetime.now(UTC) - run.started_at).total_seconds())
    # The deadline is drawn when it is in sight; a far one would squash the run to a sliver.
    deadline_shown = run.deadline_s is not None and run.deadline_s <= 3 * max(end, 1e-3)
    horizon = max(end * 1.02, run.deadline_s if deadline_shown and run.deadline_s else 0.0, 1e-3)

    # Burn-down: holds from call start to end, spend at the end.
    changes: list[tuple[float, Decimal, Decimal]] = []
    for c in llm:
        changes.append((c.started_s, Decimal(0), c.reserved_usd))
        changes.append((c.started_s + c.latency_s, c.cost_usd, -c.reserved_usd))
    changes.sort(key=lambda change: change[0])
    spent, held = Decimal(0), Decimal(0)
    spent_pts, held_pts, left_pts = [(0.0, 0.0)], [(0.0, 0.0)], [(0.0, float(run.budget_usd))]
    for at, cost, hold in changes:
        spent += cost
        held += hold
        spent_pts.append((at, float(spent)))
        held_pts.append((at, float(max(held, Decimal(0)))))
        left_pts.append((at, float(run.budget_usd - spent - max(held, Decimal(0)))))
    if run.outcome is Outcome.RUNNING and latest is not None:
        now_s, money = latest
        spent, held = money.spent_usd, money.reserved_usd
        end = max(end, now_s)
    if end > 0:  # the lines reach the run's end (or now)
        spent_pts.append((end, float(spent)))
        held_pts.append((end, float(held)))
        left_pts.append((end, float(run.budget_usd - spent - held)))
    series = [
        Line("left", left_pts, _LEFT),
        Line("spent", spent_pts, _SPENT),
        Line("reserved", held_pts, _RESERVED),
    ]
    marks: list[tuple[float, str]] = []
    if deadline_shown and run.deadline_s is not None:
        marks.append((run.deadline_s, f"deadline {run.deadline_s:g}s"))
    if run.outcome is Outcome.RUNNING and spent > 0 and end > 0:
        stop = run.deadline_s if deadline_shown and run.deadline_s is not None else horizon
        rate = float(spent) / end
        series.append(
            Line("projected", [(end, float(spent)), (stop, rate * stop)], _PROJECTED, dashed=True, step=False)
        )
    burndown = lines(
        "burndown",
        "budget burn-down: money left, spent and reserved over the run",
        series,
        x_max=horizon,
        y_max=float(run.budget_usd),
        marks=marks,
    )

    lanes = []
    for node in tree.attempts:
        a = node.attempt
        state = _attempt_state(node, winners)
        stop = a.ended_s if a.ended_s is not None else end
        lanes.append(
            Lane(
                row=f"{a.subtask} #{a.sample}",
                start=a.started_s,
                end=stop,
                colour=_ATTEMPT_COLOURS[state],
                title=f"{a.subtask} on {a.model}, batch {a.batch} sample {a.sample}: {state}, "
                f"${node.cost_usd}, {stop - a.started_s:.3g}s",
                ident=a.attempt_id,
            )
        )

    boxes: list[FlameBox] = []

    def add(node: CallNode, depth: int) -> None:
        c = node.call
        boxes.append(
            FlameBox(
                depth=depth,
                start=c.started_s,
                length=node.latency_s,
                cost_usd=float(node.cost_usd),
                label=node.label,
                ident=c.call_id,
            )
        )
        for child in node.children:
            add(child, depth + 1)

    for node in tree.attempts:
        for call in node.calls:
            add(call, 0)
    for call in tree.run_calls:
        add(call, 0)

    subtask_cost: dict[str, Decimal] = {}
    for node in tree.attempts:
        name = node.attempt.subtask
        subtask_cost[name] = subtask_cost.get(name, Decimal(0)) + node.cost_usd
    return RunView(
        detail=detail,
        calls=len(llm),
        live=live,
        reserved_usd=held if run.outcome is Outcome.RUNNING and latest is not None else None,
        burndown=burndown,
        timeline=timeline(
            "timeline",
            "attempts over the run: parallel samples, winners, cancelled siblings",
            lanes,
            x_max=horizon,
        ),
        flame=flame("flame", "calling tree over time, coloured by each call's own cost", boxes, x_max=end),
        tree=tree.attempts,
        run_calls=tree.run_calls,
        subtask_cost=subtask_cost,
        winners=winners,
    )
