"""What a policy sees (`PlanState`) and what it answers (`Allocation`).

A policy never calls a model; it only decides. `Policy.decide` is synchronous
and pure given its own seeded state: the executor calls it on every event
that changes what is ready (a subtask's batch ended, the run started).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.estimates import AttemptEstimate

__all__ = ["Allocation", "Assignment", "DagView", "InFlight", "ModelPrice", "PlanState", "Policy"]


@dataclass(frozen=True, kw_only=True)
class DagView:
    """The workflow's shape as the planner needs it."""

    subtasks: tuple[str, ...]
    """Subtask names in a topological order."""
    parents: Mapping[str, tuple[str, ...]]
    """Direct dependencies of each subtask."""
    models: Mapping[str, tuple[str, ...]]
    """Models each subtask may use, in the order the workflow gave them."""

    def children(self) -> dict[str, tuple[str, ...]]:
        """Direct dependents of each subtask."""
        out: dict[str, list[str]] = {name: [] for name in self.subtasks}
        for name in self.subtasks:
            for parent in self.parents[name]:
                out[parent].append(name)
        return {name: tuple(kids) for name, kids in out.items()}


@dataclass(frozen=True, kw_only=True)
class ModelPrice:
    """A model's prices in USD per token (floats: planning, not accounting)."""

    input_usd_per_token: float
    """USD per input token."""
    output_usd_per_token: float
    """USD per output token."""


@dataclass(frozen=True, kw_only=True)
class InFlight:
    """A batch of samples of one subtask that is still running."""

    subtask: str
    """The subtask."""
    model: str
    """The model its samples run on."""
    samples: int
    """Samples still running."""
    elapsed_s: float
    """Time since the batch started."""
    max_tokens: int
    """The batch's per-call output cap."""


@dataclass(frozen=True, kw_only=True)
class PlanState:
    """Everything a policy may look at when deciding."""

    dag: DagView
    """The workflow's shape."""
    completed: AbstractSet[str]
    """Subtasks that have succeeded (a read-only view, valid during `decide`)."""
    ready: tuple[str, ...]
    """Subtasks whose parents are complete and that have nothing in flight."""
    in_flight: tuple[InFlight, ...]
    """Batches still running."""
    budget_usd: float
    """The run's whole budget."""
    spent_usd: float
    """Settled spend so far."""
    reserved_usd: float
    """Held by calls in flight."""
    remaining_time_s: float | None
    """Time left before the deadline; `None` means no deadline."""
    elapsed_s: float
    """Time since the run started."""
    estimates: Mapping[tuple[str, str], AttemptEstimate]
    """Beliefs per (subtask, model), as they stand now: a run updates them as prompts are counted
    and attempts end (a live view during `decide`; copy it to keep it)."""
    prices: Mapping[str, ModelPrice]
    """Prices per model."""
    attempts: Mapping[str, int] = field(default_factory=dict)
    """Attempts made so far per subtask."""
    decision_index: int = 0
    """How many decisions this run has made before this one."""
    max_tokens_ceiling: Mapping[str, int] = field(default_factory=dict)
    """Per subtask, the `max_tokens` its definition sets: a ceiling no allocation may raise.

    A subtask missing here has no ceiling of its own (the model's context window still applies)."""
    time_budget_s: float | None = None
    """Wall time this decision may take; a policy that searches should stop by then.

    Set by the executor from the time left before the deadline; `None` means no limit."""

    @property
    def remaining_budget_usd(self) -> float:
        """Budget not yet spent or reserved."""
        return max(0.0, self.budget_usd - self.spent_usd - self.reserved_usd)

    def expected_attempt_cost(self, subtask: str, model: str, max_tokens: int | None = None) -> float:
        """Expected USD of one attempt (mean output tokens, capped by max_tokens)."""
        est = self.estimates[(subtask, model)]
        price = self.prices[model]
        out = est.mean_output_tokens()
        if max_tokens is not None:
            out = min(out, float(max_tokens))
        return est.input_tokens * price.input_usd_per_token + out * price.output_usd_per_token

    def reservation_usd(self, subtask: str, model: str, max_tokens: int) -> float:
        """What the ledger reserves for one attempt: input tokens + max_tokens at full price."""
        est = self.estimates[(subtask, model)]
        price = self.prices[model]
        return est.input_tokens * price.input_usd_per_token + max_tokens * price.output_usd_per_token


@dataclass(frozen=True, kw_only=True)
class Assignment:
    """What one ready subtask gets now."""

    model: str
    """Model to run on."""
    samples: int = 1
    """Parallel samples; 0 defers the subtask to a later decision."""
    max_tokens: int | None = None
    """Per-call output cap; `None` lets the executor choose from the estimates."""

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise ValueError(f"samples must be >= 0, got {self.samples}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {self.max_tokens}")


@dataclass(frozen=True, kw_only=True)
class Allocation:
    """A policy's answer: an assignment per ready subtask (a missing one means defer)."""

    assignments: Mapping[str, Assignment]
    """Per ready subtask."""
    info: Mapping[str, Any] = field(default_factory=dict)
    """Why: candidates considered, estimated success of the chosen and runner-up, ..."""


class Policy(Protocol):
    """Decides model, samples and max_tokens for every ready subtask.

    A policy whose decisions may take more than a millisecond (a search) sets a class
    attribute `offload = True`: the executor then calls `decide` on a worker thread, one
    decision at a time, with `PlanState.time_budget_s` set, so that the event loop keeps
    serving the deadline meanwhile. Such a policy's heavy work must release the GIL.
    """

    name: str
    """Name shown in the CLI and stored with each decision."""

    def decide(self, state: PlanState) -> Allocation:
        """Answer for `state.ready`; called on every event that changes it."""
        ...
