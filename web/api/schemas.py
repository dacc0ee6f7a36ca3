"""The HTTP API's request and response bodies (they make its OpenAPI schema).

Money is exact: amounts in USD are decimal strings (`"0.012345678"`), as the ledger
keeps them; times are ISO 8601 in UTC, or seconds from the run's start (`*_s`).
Responses are built from the recorded records (`orchestrator.records`) by field name.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from orchestrator.errors import ConfigError
from orchestrator.workflow import RunLimits

__all__ = [
    "AttemptNodeOut",
    "CallNodeOut",
    "CallTreeOut",
    "CancelOut",
    "DecisionOut",
    "LearnedEstimateOut",
    "ModelOut",
    "RunDetailOut",
    "RunOut",
    "RunPageOut",
    "RunSubmission",
    "RunSummaryOut",
    "SubmittedRun",
    "SubtaskNodeOut",
    "SubtaskOut",
    "WorkflowOut",
    "WorkflowSubtaskOut",
]

RunStatus = Literal[
    "queued",
    "running",
    "completed",
    "budget_exhausted",
    "deadline_exceeded",
    "failed",
    "cancelled",
    "abandoned",
]
"""A run's state: `queued` until the runner starts it, then its recorded outcome."""


def _usd_text(amount: Decimal) -> str:
    """`0.0084741`, `0.05`, `0`: exact, without trailing zeros or an exponent."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


Usd = Annotated[Decimal, PlainSerializer(_usd_text, return_type=str, when_used="json")]
"""An exact amount in USD, sent as a decimal string."""


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class RunSubmission(BaseModel):
    """`POST /runs`: which registered workflow to run, on what, under which limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow: str = Field(min_length=1, examples=["code-pipeline"])
    """The name of a registered workflow (`GET /workflows` lists them)."""
    inputs: dict[str, Any] = Field(
        default_factory=dict, examples=[{"feature": "a CSV to Markdown converter"}]
    )
    """Run inputs, overriding the workflow's defaults name by name."""
    budget_usd: Usd | None = Field(default=None, examples=["0.05"])
    """Hard budget in USD (a number or a decimal string); default: the workflow's `budget_usd`."""
    deadline_s: float | None = Field(default=None, examples=[60])
    """Seconds from the start; left out: the workflow's `deadline_s`; `null`: no deadline."""
    policy: str = Field(default="mcpp", min_length=1)
    """A policy name (`budgetflow policies` lists them)."""
    seed: int = Field(default=0, ge=0, lt=2**63)
    """Seed of the policy's and the simulated backend's draws."""
    explore: bool = Field(default=False, strict=True)
    """Plan on the learned beliefs (else the declared priors) drawn once from their uncertainty,
    seeded by `seed` (Thompson sampling; docs/learning.md)."""

    @field_validator("budget_usd", mode="before")
    @classmethod
    def _budget(cls, value: object) -> object:
        if value is None:
            return None
        try:
            return RunLimits.check_budget(value, name="budget_usd")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("deadline_s", mode="before")
    @classmethod
    def _deadline(cls, value: object) -> object:
        try:
            return RunLimits.check_deadline(value, name="deadline_s")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class SubmittedRun(_Out):
    """`POST /runs` accepted the run: it is queued and runs outside the request."""

    run_id: str
    """The run's id."""
    workflow: str
    """Its workflow."""
    status: RunStatus
    """`queued`."""
    links: dict[str, str]
    """Where to follow it: `self` (its detail), `events` (server-sent events), `cancel`."""


class RunSummaryOut(_Out):
    """One run in a list."""

    run_id: str
    workflow: str
    policy: str
    outcome: RunStatus
    """How it ended, or `running` (`abandoned` when its process died)."""
    budget_usd: Usd
    spent_usd: Usd
    """Settled spend (so far, for a run in progress)."""
    overrun_usd: Usd
    """Billed above the reservations, beyond the budget (normally 0)."""
    started_at: datetime
    ended_at: datetime | None
    makespan_s: float | None
    simulated: bool
    """Whether any model was served by the simulated backend."""
    calls: int
    """Model calls recorded (retries included)."""


class RunPageOut(_Out):
    """`GET /runs`: one page of runs."""

    runs: list[RunSummaryOut]
    total: int
    """Runs matching the filters, over all pages."""
    next_cursor: str | None
    """Pass as `cursor` for the next page (same filters and sort); `null` on the last page."""


class RunOut(_Out):
    """A run's record."""

    run_id: str
    workflow: str
    policy: str
    outcome: RunStatus
    reason: str | None
    """Why it did not complete."""
    budget_usd: Usd
    spent_usd: Usd
    overrun_usd: Usd
    deadline_s: float | None
    seed: int
    simulated: bool
    inputs: dict[str, Any]
    started_at: datetime | None
    """`null` while queued."""
    ended_at: datetime | None
    makespan_s: float | None
    beliefs: str | None
    """What the planner's estimates came from, e.g. `trained v3, then priors; updated in run`;
    `null` while queued, and for runs recorded before it was kept."""


class SubtaskOut(_Out):
    """A subtask's execution."""

    subtask: str
    status: str
    """`pending`, `ready`, `running`, `completed`, `failed` or `cancelled`."""
    attempts: int
    winner_attempt_id: str | None
    output_preview: str | None
    started_s: float | None
    ended_s: float | None
    spent_usd: Usd


class DecisionOut(_Out):
    """A policy decision: what it saw, what it chose, and why."""

    index: int
    at_s: float
    policy: str
    state: dict[str, Any]
    """What the policy saw (ready subtasks, money and time left)."""
    allocation: dict[str, Any]
    """What it chose per subtask: model, samples, max_tokens."""
    info: dict[str, Any]
    """Its explanation (estimated success, runner-up, ...)."""
    decide_ms: float


class CallNodeOut(BaseModel):
    """A call in the calling tree, with the calls made inside it."""

    call_id: str
    kind: str
    """`llm`, `agent` or `check`."""
    model: str | None
    litellm_model: str | None
    status: str
    """`ok`, `error` or `cancelled`."""
    error: str | None
    retry: int
    input_tokens: int
    output_tokens: int
    cost_usd: Usd
    """This call's own cost."""
    total_cost_usd: Usd
    """This call's cost plus all its descendants'."""
    started_s: float
    latency_s: float
    ttft_s: float | None
    simulated: bool
    prompt: str | None
    """Prompt text, when content recording is on."""
    response: str | None
    """Response text, when content recording is on."""
    children: list[CallNodeOut]


class AttemptNodeOut(BaseModel):
    """An attempt (one sample of a subtask) and its calls."""

    attempt_id: str
    model: str
    batch: int
    sample: int
    status: str
    """`passed` (the winner), `passed_late`, `failed`, `error`, `cancelled`, `not_started`, `running`."""
    check_passed: bool | None
    check_detail: str | None
    started_s: float
    ended_s: float | None
    cost_usd: Usd
    """Every call under it."""
    latency_s: float | None
    """Start to end; `null` while it runs."""
    calls: list[CallNodeOut]


class SubtaskNodeOut(BaseModel):
    """A subtask in the calling tree, its attempts below."""

    subtask: str
    cost_usd: Usd
    """Every call of every attempt."""
    latency_s: float | None
    """First attempt's start to last attempt's end."""
    attempts: list[AttemptNodeOut]


class CallTreeOut(BaseModel):
    """The calling tree: run > subtasks > attempts > calls > child calls, cost and latency at each node."""

    cost_usd: Usd
    """Every call of the run."""
    latency_s: float | None
    """The run's makespan (so far)."""
    subtasks: list[SubtaskNodeOut]
    run_calls: list[CallNodeOut]
    """Calls outside any attempt."""


class RunDetailOut(BaseModel):
    """`GET /runs/{id}`: everything recorded about a run."""

    run: RunOut
    calls: int
    """Model calls (retries included; agent and check spans are not calls)."""
    subtasks: list[SubtaskOut]
    decisions: list[DecisionOut]
    tree: CallTreeOut
    live: bool
    """Whether this server is running it now (then `GET /runs/{id}/events` follows it live)."""
    error: str | None = None
    """Why a run this server accepted could not start (nothing was recorded then)."""


class CancelOut(_Out):
    """`POST /runs/{id}/cancel`."""

    run_id: str
    status: Literal["cancelling", "already_finished"]
    """`cancelling`: it stops (in-flight calls cancelled and settled) and is recorded `cancelled`."""


class WorkflowSubtaskOut(_Out):
    """A subtask of a registered workflow."""

    name: str
    models: list[str]
    after: list[str]
    """Its dependencies."""


class WorkflowOut(_Out):
    """A workflow the API may run."""

    name: str
    module: str
    """The module it was registered from."""
    inputs: list[str]
    """Input names its templates read."""
    default_inputs: dict[str, Any]
    budget_usd: Usd | None
    """Default budget (`null`: a submission must give one)."""
    deadline_s: float | None
    models: list[str]
    simulated_models: list[str]
    """Models served by the simulated backend on this server (no API key)."""
    subtasks: list[WorkflowSubtaskOut]


class LearnedEstimateOut(_Out):
    """What recorded runs say about a model on one subtask of one workflow."""

    workflow: str
    subtask: str
    samples: int
    """Judged attempts (passed or failed their check)."""
    success_rate: float
    mean_latency_s: float


class ModelOut(_Out):
    """A model of a registered workflow's catalog, with its prices."""

    name: str
    litellm_model: str
    """As this server calls it (`budgetflow-sim/...` when simulated)."""
    provider: str
    tier: str | None
    input_price_per_mtok: Usd
    output_price_per_mtok: Usd
    simulated: bool
    workflows: list[str]
    learned: list[LearnedEstimateOut]
    """Per-subtask success and latency learned from recorded runs (empty until there are enough)."""
