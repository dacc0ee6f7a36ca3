"""The live progress view of `budgetflow run`: a recorder that draws the run as it goes."""

from __future__ import annotations

import time
from decimal import Decimal

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.ledger import InProcessLedger, Ledger, LedgerSnapshot
from orchestrator.records import (
    AttemptRecord,
    AttemptStatus,
    CallKind,
    CallRecord,
    DecisionRecord,
    RunRecord,
    SubtaskRecord,
    SubtaskStatus,
)

__all__ = ["ProgressView"]

_STYLE = {
    SubtaskStatus.PENDING: "dim",
    SubtaskStatus.READY: "yellow",
    SubtaskStatus.RUNNING: "cyan",
    SubtaskStatus.COMPLETED: "green",
    SubtaskStatus.FAILED: "red",
    SubtaskStatus.CANCELLED: "magenta",
}


class ProgressView:
    """Shows subtasks, budget (spent / reserved / left) and time (elapsed / left), live."""

    def __init__(
        self,
        console: Console,
        *,
        subtasks: list[str],
        ledger: Ledger,
        budget_usd: Decimal,
        deadline_s: float | None,
        simulated: list[str],
        live: bool = True,
    ) -> None:
        self._console = console
        self._order = subtasks
        self._status = dict.fromkeys(subtasks, SubtaskStatus.PENDING)
        self._model: dict[str, str] = {}
        self._attempts = dict.fromkeys(subtasks, 0)
        self._running = dict.fromkeys(subtasks, 0)
        self._cost = {s: Decimal(0) for s in subtasks}
        self._ledger = ledger
        self._budget = budget_usd
        self._deadline = deadline_s
        self._simulated = simulated
        self._started: float | None = None
        self._last_snapshot: LedgerSnapshot | None = None
        self._decisions = 0
        self._calls = 0
        self._title = ""
        self._live = (
            Live(console=console, refresh_per_second=4, transient=False, get_renderable=self.render)
            if live
            else None
        )

    def _snapshot(self) -> LedgerSnapshot | None:
        if isinstance(self._ledger, InProcessLedger):
            return self._ledger.snapshot_now()
        return self._last_snapshot

    async def _poll(self) -> None:
        # a shared (Redis) ledger is read asynchronously, once per event
        if not isinstance(self._ledger, InProcessLedger):
            self._last_snapshot = await self._ledger.snapshot()

    def render(self) -> Group:
        """The current view."""
        table = Table(expand=True, box=None, pad_edge=False)
        for col, justify in (
            ("subtask", "left"),
            ("state", "left"),
            ("model", "left"),
            ("attempts", "right"),
            ("running", "right"),
            ("cost $", "right"),
        ):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for name in self._order:
            status = self._status[name]
            table.add_row(
                name,
                Text(status.value, style=_STYLE[status]),
                self._model.get(name, "-"),
                str(self._attempts[name]),
                str(self._running[name]) if self._running[name] else "",
                f"{self._cost[name]:.6f}",
            )
        snap = self._snapshot()
        elapsed = time.monotonic() - self._started if self._started is not None else 0.0
        lines: list[Text | Table] = []
        if snap is not None:
            spent, reserved = snap.spent_nano / 1e9, snap.reserved_nano / 1e9
            left = snap.available_nano / 1e9
            lines.append(
                Text.assemble(
                    ("budget  ", "bold"),
                    (f"spent ${spent:.6f}", "green"),
                    "  ",
                    (f"reserved ${reserved:.6f}", "yellow"),
                    "  ",
                    (f"left ${left:.6f}", "bold"),
                    f"  of ${self._budget}",
                )
            )
            bar = Table.grid(padding=(0, 1))
            bar.add_row(
                Text("        "),
                ProgressBar(total=float(self._budget), completed=spent + reserved, width=60),
                Text(f"{(spent + reserved) / float(self._budget):.0%} committed", style="dim"),
            )
            lines.append(bar)
        time_line = Text.assemble(("time    ", "bold"), f"elapsed {elapsed:6.1f}s")
        if self._deadline is not None:
            time_line.append(f"  left {max(0.0, self._deadline - elapsed):6.1f}s of {self._deadline:g}s")
        lines.append(time_line)
        lines.append(Text(f"decisions {self._decisions}   calls {self._calls}", style="dim"))
        title = self._title
        if self._simulated:
            title += "  [SIMULATED: " + ", ".join(self._simulated) + "]"
        return Group(Panel(table, title=title, title_align="left"), *lines)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    async def run_started(self, run: RunRecord) -> None:
        """Start drawing."""
        self._started = time.monotonic()
        self._title = f"{run.workflow}  run {run.run_id}  policy {run.policy}"
        if self._live is not None:
            self._live.start()
        await self._poll()
        self._refresh()

    async def decision_made(self, decision: DecisionRecord) -> None:
        """Count decisions; show chosen models."""
        self._decisions += 1
        for name, chosen in decision.allocation.items():
            if chosen.get("samples", 0):
                self._model[name] = f"{chosen['model']} x{chosen['samples']}"
        await self._poll()
        self._refresh()

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        """An attempt is running."""
        self._attempts[attempt.subtask] += 1
        self._running[attempt.subtask] += 1
        await self._poll()
        self._refresh()

    async def call_finished(self, call: CallRecord) -> None:
        """Add the call's cost."""
        if call.kind is CallKind.LLM and call.subtask in self._cost:
            self._calls += 1
            self._cost[call.subtask] += call.cost_usd
            self._refresh()

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        """An attempt ended."""
        self._running[attempt.subtask] = max(0, self._running[attempt.subtask] - 1)
        if attempt.status is AttemptStatus.PASSED:
            self._model[attempt.subtask] = attempt.model
        await self._poll()
        self._refresh()

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        """Show the subtask's state."""
        self._status[subtask.subtask] = subtask.status
        await self._poll()
        self._refresh()

    async def run_finished(self, run: RunRecord) -> None:
        """Draw the last frame and stop."""
        await self._poll()
        self._refresh()
        if self._live is not None:
            self._live.stop()

    async def aclose(self) -> None:
        """Stop drawing if still live."""
        if self._live is not None and self._live.is_started:
            self._live.stop()
