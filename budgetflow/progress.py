"""The live progress view of `budgetflow run`: an observer that draws the run as it goes.

It also keeps the run's tallies (attempts, model calls, decisions) and its final
record, from which the CLI prints the closing summary, also when a signal
stopped the run.

The view fits the terminal: the header, budget, time and count lines come first
and always show; the subtask table gets the rows that are left, running and
ready subtasks first, and says how many it leaves out. A long workflow name is
shortened, never the run id or the `SIMULATED` tag.
"""

from __future__ import annotations

import time
from decimal import Decimal

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from budgetflow._format import OUTCOME_STYLE, money, plural, usd
from orchestrator.events import (
    AttemptFinished,
    AttemptStarted,
    CallFinished,
    DecisionMade,
    Event,
    LedgerView,
    RunFinished,
    RunStarted,
    SubtaskChanged,
)
from orchestrator.ledger import usd_to_nano
from orchestrator.records import AttemptStatus, CallKind, RunRecord, SubtaskStatus

__all__ = ["ProgressView"]

_ACTIVE = (SubtaskStatus.RUNNING, SubtaskStatus.READY, SubtaskStatus.FAILED)


class ProgressView:
    """Shows subtasks, budget (spent / reserved / left) and time (elapsed / left), live."""

    def __init__(
        self,
        console: Console,
        *,
        subtasks: list[str],
        budget_usd: Decimal,
        deadline_s: float | None,
        simulated: list[str],
        live: bool = True,
        stop_hint: str = "",
        functions: frozenset[str] = frozenset(),
    ) -> None:
        """Prepare the view.

        Args:
            console: where to draw.
            subtasks: subtask names in topological order.
            budget_usd: the run's budget.
            deadline_s: the run's deadline, if any.
            simulated: names of the models the simulated backend serves.
            live: draw live; otherwise print one line when the run starts.
            stop_hint: said on that line, e.g. how to stop the run.
            functions: subtasks run by plain functions (`FunctionAgent`): shown as
                `function` until they make a model call.
        """
        self._console = console
        self._order = subtasks
        self._status = dict.fromkeys(subtasks, SubtaskStatus.PENDING)
        self._model: dict[str, str] = {}
        self._attempts = dict.fromkeys(subtasks, 0)
        self._running = dict.fromkeys(subtasks, 0)
        self._cost = {s: Decimal(0) for s in subtasks}
        self._budget = budget_usd
        self._deadline = deadline_s
        self._simulated = simulated
        self._stop_hint = stop_hint
        self._functions = set(functions)
        self._started: float | None = None
        self._money: LedgerView | None = None
        self.decisions = 0
        """Policy decisions so far."""
        self.model_calls = 0
        """Model (LLM) calls so far, retries included."""
        self.attempts = 0
        """Attempts started so far."""
        self.run: RunRecord | None = None
        """The run as last recorded (its final record once it ended)."""
        self.finished = False
        """Whether the run ended (then `run` is its final record)."""
        self._live = (
            Live(console=console, refresh_per_second=4, transient=False, get_renderable=self.render)
            if live
            else None
        )

    def _snapshot(self) -> LedgerView | None:
        if self.finished and self.run is not None:
            # The run is over: nothing is reserved any more, whatever was last seen held.
            return LedgerView(
                budget_nano=usd_to_nano(self._budget),
                spent_nano=usd_to_nano(self.run.spent_usd),
                reserved_nano=0,
            )
        return self._money

    def _elapsed(self) -> float:
        if self.finished and self.run is not None and self.run.makespan_s is not None:
            return self.run.makespan_s
        return time.monotonic() - self._started if self._started is not None else 0.0

    def render(self) -> _Frame:
        """The current view, laid out for the console's size when drawn."""
        return _Frame(self)

    def _lines(self, width: int) -> list[Text | Table]:
        lines: list[Text | Table] = [self._title(width)]
        snap = self._snapshot()
        if snap is not None:
            spent, reserved = float(snap.spent_usd), float(snap.reserved_usd)
            left = float(snap.left_usd)
            lines.append(
                Text.assemble(
                    ("budget  ", "bold"),
                    (f"spent {money(spent)}", "green"),
                    "  ",
                    (f"reserved {money(reserved)}", "yellow"),
                    "  ",
                    (f"left {money(left)}", "bold"),
                    f"  of ${usd(self._budget)}",
                    no_wrap=True,
                    overflow="ellipsis",
                )
            )
            bar = Table.grid(padding=(0, 1))
            bar.add_row(
                Text("       "),
                ProgressBar(
                    total=float(self._budget), completed=spent + reserved, width=max(10, min(60, width - 24))
                ),
                Text(f"{(spent + reserved) / float(self._budget):.0%} committed", style="dim"),
            )
            lines.append(bar)
        elapsed = self._elapsed()
        time_line = Text.assemble(("time    ", "bold"), f"elapsed {elapsed:6.1f}s", no_wrap=True)
        if self._deadline is not None:
            time_line.append(f"  left {max(0.0, self._deadline - elapsed):6.1f}s of {self._deadline:g}s")
        lines.append(time_line)
        lines.append(
            Text(
                f"model calls {self.model_calls}   attempts {self.attempts}   decisions {self.decisions}",
                style="dim",
                no_wrap=True,
            )
        )
        return lines

    def _title(self, width: int) -> Text:
        title = Text(no_wrap=True, overflow="ellipsis")
        if self._simulated:
            title.append(f"[SIMULATED: {', '.join(self._simulated)}] ", style="bold yellow")
        if self.run is None:
            title.append("starting", style="dim")
            return title
        title.append(f"run {self.run.run_id}", style="bold")
        title.append(f"  {self.run.policy}  ")
        room = width - title.cell_len
        name = self.run.workflow
        if len(name) > room:
            name = name[: max(0, room - 1)] + "…"
        title.append(name, style="bold")
        return title

    def _table(self, rows: int) -> Table:
        table = Table(expand=True, box=None, pad_edge=False, show_edge=False)
        for col, justify in (
            ("subtask", "left"),
            ("state", "left"),
            ("model", "left"),
            ("attempts", "right"),
            ("running", "right"),
            ("cost $", "right"),
        ):
            table.add_column(col, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
        shown = self._shown(rows)
        for name in self._order:
            if name not in shown:
                continue
            status = self._status[name]
            table.add_row(
                name,
                Text(status.value, style=OUTCOME_STYLE.get(status.value, "")),
                "function" if name in self._functions else self._model.get(name, "-"),
                str(self._attempts[name]),
                str(self._running[name]) if self._running[name] else "",
                f"{self._cost[name]:.6f}",
            )
        hidden = [n for n in self._order if n not in shown]
        if hidden:
            counts: dict[str, int] = {}
            for name in hidden:
                counts[self._status[name].value] = counts.get(self._status[name].value, 0) + 1
            table.add_row(
                Text(f"… {len(hidden)} more", style="dim"),
                Text(", ".join(f"{n} {state}" for state, n in counts.items()), style="dim"),
            )
        return table

    def _shown(self, rows: int) -> set[str]:
        """The subtasks that get a row: all if they fit, else active ones, then pending, then done."""
        if len(self._order) <= rows:
            return set(self._order)
        room = max(1, rows - 1)  # one row says what is left out
        ranked = sorted(
            self._order,
            key=lambda n: (
                0 if self._status[n] in _ACTIVE else 1 if self._status[n] is SubtaskStatus.PENDING else 2
            ),
        )
        return set(ranked[:room])

    async def observe(self, event: Event) -> None:
        """Update the view from one of the run's events.

        Drawing is Rich's, 4 times a second on its own thread: a frame per event would
        cost the run's event loop a full layout on every call of a busy run.
        """
        self._money = event.ledger
        if isinstance(event, RunStarted):
            self._run_started(event.run)
        elif isinstance(event, DecisionMade):
            self.decisions += 1
            for name, chosen in event.decision.allocation.items():
                if chosen.get("samples", 0):
                    self._model[name] = f"{chosen['model']} x{chosen['samples']}"
        elif isinstance(event, AttemptStarted):
            self.attempts += 1
            name = event.attempt.subtask
            if name in self._attempts:
                self._attempts[name] += 1
                self._running[name] += 1
        elif isinstance(event, CallFinished):
            call = event.call
            if call.kind is CallKind.LLM:
                self.model_calls += 1
                self._functions.discard(call.subtask or "")
                if call.subtask in self._cost:
                    self._cost[call.subtask] += call.cost_usd
        elif isinstance(event, AttemptFinished):
            attempt = event.attempt
            if attempt.subtask in self._running:
                self._running[attempt.subtask] = max(0, self._running[attempt.subtask] - 1)
            if attempt.status is AttemptStatus.PASSED:
                self._model[attempt.subtask] = attempt.model
        elif isinstance(event, SubtaskChanged):
            if event.subtask.subtask in self._status:
                self._status[event.subtask.subtask] = event.subtask.status
        elif isinstance(event, RunFinished):
            self.run = event.run
            self.finished = True
            if self._live is not None:
                self._live.stop()  # draws the last frame

    def _run_started(self, run: RunRecord) -> None:
        """Start drawing (or, without the live view, say that the run started)."""
        self._started = time.monotonic()
        self.run = run
        if self._live is not None:
            self._live.start()
        else:
            self._console.print(
                f"run {run.run_id} started: workflow `{run.workflow}`, policy {run.policy},"
                f" {plural(len(self._order), 'subtask')}"
                + (f"; {self._stop_hint}" if self._stop_hint else ""),
                highlight=False,
                markup=False,
            )

    async def aclose(self) -> None:
        """Stop drawing if still live."""
        if self._live is not None and self._live.is_started:
            self._live.stop()


class _Frame:
    """One frame of the view, laid out when Rich draws it (it knows the size then)."""

    def __init__(self, view: ProgressView) -> None:
        self._view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        height = options.height or options.size.height
        lines = self._view._lines(width)
        rows = max(2, height - len(lines) - 2)
        yield Group(*lines, self._view._table(rows))
