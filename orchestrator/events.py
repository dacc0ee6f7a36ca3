"""One typed stream of what happens in a run, for everything that watches it.

The executor emits every event through one method; each carries its record, the
run-relative time it happened, its place in the run's sequence (for resuming a
stream), and a view of the run's money at that moment, so no observer ever asks
the ledger. Events, in the order a run produces them:

```text
RunStarted
  DecisionMade                 a policy decision (its state, its allocation, why)
  AttemptStarted               a sample of a subtask began
    CallFinished               a model call (or an agent span) ended, recorded durably
    BudgetThresholdCrossed     spend passed 50 / 80 / 95 % of the budget (the run's, or a
                               shared budget above it: `budget`)
  AttemptFinished              its final status (`passed` for the one winner)
  SubtaskChanged               ready, running, completed, failed, cancelled (with its output)
RunFinished
```

The durable recorder (`orchestrator.records.Recorder`) is written before an event
is published, so an observer never sees a call that is not durable yet.
Observers (`Observer`) receive events from a bounded queue of their own and can
never slow, stall or fail a run (`orchestrator.observers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from orchestrator.ledger import nano_to_usd
from orchestrator.plan import DagView
from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    RunRecord,
    SubtaskRecord,
)

__all__ = [
    "BUDGET_THRESHOLDS",
    "EVENT_TYPES",
    "AttemptFinished",
    "AttemptStarted",
    "BudgetThresholdCrossed",
    "CallFinished",
    "DecisionMade",
    "Event",
    "LedgerView",
    "Observer",
    "RunFinished",
    "RunStarted",
    "SharedBudgetView",
    "SubtaskChanged",
    "ThresholdSource",
]

BUDGET_THRESHOLDS = (0.5, 0.8, 0.95)
"""Fractions of the budget whose crossing by spend is an event."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerView:
    """The run's money when the event happened, in the ledger's exact units (nano-USD),
    with the same amounts in exact USD."""

    budget_nano: int
    """The run's budget."""
    spent_nano: int
    """Settled spend so far."""
    reserved_nano: int
    """Held by calls in flight."""
    overrun_nano: int = 0
    """Billed above the reservations, beyond the budget, so far."""

    @property
    def budget_usd(self) -> Decimal:
        """The run's budget, USD."""
        return nano_to_usd(self.budget_nano)

    @property
    def spent_usd(self) -> Decimal:
        """Settled spend so far, USD."""
        return nano_to_usd(self.spent_nano)

    @property
    def reserved_usd(self) -> Decimal:
        """Held by calls in flight, USD."""
        return nano_to_usd(self.reserved_nano)

    @property
    def overrun_usd(self) -> Decimal:
        """Billed above the reservations, beyond the budget, so far, USD."""
        return nano_to_usd(self.overrun_nano)

    @property
    def left_usd(self) -> Decimal:
        """What new reservations may still take, USD."""
        return nano_to_usd(self.budget_nano - self.spent_nano - self.reserved_nano)


@dataclass(frozen=True, kw_only=True, slots=True)
class SharedBudgetView:
    """A budget above runs (a team's, an API token's, a workflow's) in one window, in nano-USD.

    Its totals count every run held in it, in every process (`storage.shared_budgets`)."""

    name: str
    """The budget's name (`budgetflow budgets list`)."""
    window: str
    """The window its totals are for: `2026-01-31` (a day, UTC), `2026-01` (a month), `` (none)."""
    limit_nano: int
    """Its limit."""
    spent_nano: int
    """Settled spend of every run under it, in the window."""
    reserved_nano: int
    """Held by the calls in flight of every run under it."""

    @property
    def limit_usd(self) -> Decimal:
        """Its limit, USD."""
        return nano_to_usd(self.limit_nano)

    @property
    def spent_usd(self) -> Decimal:
        """Settled spend, USD."""
        return nano_to_usd(self.spent_nano)

    @property
    def reserved_usd(self) -> Decimal:
        """Held by calls in flight, USD."""
        return nano_to_usd(self.reserved_nano)


@runtime_checkable
class ThresholdSource(Protocol):
    """A ledger that also holds money in shared budgets and sees their thresholds crossed.

    The executor drains it on every event and emits one `BudgetThresholdCrossed` (with
    `budget` set) per crossing; a crossing is reported to exactly one run of the budget.
    """

    def take_crossings(self) -> list[tuple[float, SharedBudgetView]]:
        """The crossings seen since the last call: (threshold, the budget just after), oldest first."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class _Event:
    run_id: str
    """The run."""
    seq: int
    """0, 1, 2, ... within the run: the event's place in the stream (resume after it)."""
    at_s: float
    """Run-relative time (the executor's monotonic clock)."""
    ledger: LedgerView
    """The run's money at that moment."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted(_Event):
    """A run began."""

    run: RunRecord
    """The run (outcome `running`)."""
    dag: DagView
    """The workflow's shape: subtasks in order, their parents and models."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DecisionMade(_Event):
    """The policy decided what the ready subtasks get."""

    decision: DecisionRecord
    """The decision, with its state, allocation and explanation."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptStarted(_Event):
    """A sample of a subtask began."""

    attempt: AttemptRecord
    """The attempt (status `running`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CallFinished(_Event):
    """A model call, or an agent span, ended; its record is durable."""

    call: CallRecord
    """The call, with its tokens, cost and latency."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptFinished(_Event):
    """An attempt ended, with its final status."""

    attempt: AttemptRecord
    """The attempt."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SubtaskChanged(_Event):
    """A subtask changed state."""

    subtask: SubtaskRecord
    """Its new state."""
    output: Any = None
    """Its output, when it completed (the winner's value, whole)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetThresholdCrossed(_Event):
    """Spend passed a fraction of the budget (`BUDGET_THRESHOLDS`): the run's, or a shared one's."""

    threshold: float
    """The fraction passed (0.5, 0.8 or 0.95)."""
    budget: SharedBudgetView | None = None
    """`None`: the run's own budget (`ledger`). Else the shared budget above the run whose spend,
    summed over all its runs in its window, passed `threshold`; once per window, on the run whose
    settle crossed it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFinished(_Event):
    """A run ended."""

    run: RunRecord
    """The run, with its outcome, reason, spend and makespan."""


Event = (
    RunStarted
    | DecisionMade
    | AttemptStarted
    | CallFinished
    | AttemptFinished
    | SubtaskChanged
    | BudgetThresholdCrossed
    | RunFinished
)
"""Everything a run emits."""

EVENT_TYPES: frozenset[type[Event]] = frozenset(
    (
        RunStarted,
        DecisionMade,
        AttemptStarted,
        CallFinished,
        AttemptFinished,
        SubtaskChanged,
        BudgetThresholdCrossed,
        RunFinished,
    )
)
"""Every kind of event, as classes."""


class Observer(Protocol):
    """Watches runs. Its calls happen off the run's critical path (`orchestrator.observers`).

    An observer that only needs some kinds of events says which in an attribute
    `event_types` (a collection of event classes); it then receives only those, in
    order, and a run that no observer wants an event of does not even build it. Without
    the attribute, an observer receives everything.
    """

    async def observe(self, event: Event) -> None:
        """One event of a run, in the run's order."""
        ...
