"""Records of a run, as the recorder receives them: the calling tree.

A run has subtask executions; a subtask has attempts (parallel samples and
retries after failed batches); an attempt has calls. A call may have a
parent call (an agent span whose inner model calls are its children), which
is how LangGraph agents show up as trees. Money is `Decimal` USD here
(converted exactly from the ledger's integer nano-dollars).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "AttemptRecord",
    "AttemptStatus",
    "CallKind",
    "CallRecord",
    "CallStatus",
    "DecisionRecord",
    "Outcome",
    "Recorder",
    "RunRecord",
    "SubtaskRecord",
    "SubtaskStatus",
]


class Outcome(StrEnum):
    """How a run ended."""

    RUNNING = "running"
    COMPLETED = "completed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"
    """The process running it died (no heartbeat); spend is what its recorded calls prove."""


class SubtaskStatus(StrEnum):
    """State of one subtask in a run."""

    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptStatus(StrEnum):
    """How one attempt (one sample) ended."""

    RUNNING = "running"
    PASSED = "passed"
    """The winner: the first sample of its batch to pass; its output was taken."""
    PASSED_LATE = "passed_late"
    """Passed its check after a sibling had already won (its output was not used)."""
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"
    NOT_STARTED = "not_started"


class CallKind(StrEnum):
    """What a node of the calling tree is."""

    LLM = "llm"
    AGENT = "agent"
    CHECK = "check"
    WARMUP = "warmup"


class CallStatus(StrEnum):
    """How one call ended."""

    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"
    IN_FLIGHT = "in_flight"
    """Journaled before it was sent (its reservation as its cost); replaced when it ends."""
    LOST_IN_CRASH = "lost_in_crash"
    """In flight when its process died: settled at its reservation when the run was resumed or
    closed (the provider may have billed up to that)."""


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run of a workflow."""

    run_id: str
    """Unique id."""
    workflow: str
    """Workflow name."""
    policy: str
    """Policy name."""
    budget_usd: Decimal
    """Hard budget."""
    deadline_s: float | None
    """Deadline in seconds from the start; `None` means none."""
    seed: int
    """Seed of the run (policy and simulated backend)."""
    simulated: bool
    """Whether any model was served by the simulated backend."""
    started_at: datetime
    """Wall-clock start (UTC)."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """Run inputs (as given, JSON-serialisable)."""
    outcome: Outcome = Outcome.RUNNING
    """How the run ended."""
    reason: str | None = None
    """Why it failed, when it did."""
    spent_usd: Decimal = Decimal(0)
    """Settled spend, never above the budget."""
    overrun_usd: Decimal = Decimal(0)
    """What providers billed above the reservations that did not fit in the budget.

    The sum of the run's call costs is `spent_usd + overrun_usd`; non-zero only when a
    provider billed more than the call's reservation allowed (see docs/guarantees.md)."""
    makespan_s: float | None = None
    """Time from start to end."""
    ended_at: datetime | None = None
    """Wall-clock end (UTC)."""
    beliefs: str | None = None
    """What the planner's estimates came from, in the order asked (`orchestrator.describe_beliefs`),
    e.g. `trained v3, then priors`; `None` for runs recorded before it was kept."""


@dataclass(frozen=True, kw_only=True)
class SubtaskRecord:
    """A subtask's execution within a run."""

    run_id: str
    """Run."""
    subtask: str
    """Subtask name."""
    status: SubtaskStatus
    """Final (or current) state."""
    attempts: int = 0
    """Attempts started."""
    winner_attempt_id: str | None = None
    """Attempt whose output was taken."""
    output_preview: str | None = None
    """Start of the output text."""
    output: Any = None
    """The winner's output, whole, as JSON (`None` until completed, or with content recording off)."""
    started_s: float | None = None
    """Run-relative time of the first attempt."""
    ended_s: float | None = None
    """Run-relative time it completed or failed."""
    spent_usd: Decimal = Decimal(0)
    """Settled spend of its calls."""


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    """One sample of a subtask on a model."""

    attempt_id: str
    """Unique id."""
    run_id: str
    """Run."""
    subtask: str
    """Subtask."""
    model: str
    """Model name."""
    batch: int
    """Which batch of the subtask (0 first, then after each all-failed batch)."""
    sample: int
    """Index within the batch."""
    max_tokens: int
    """Per-call output cap."""
    started_s: float
    """Run-relative start."""
    status: AttemptStatus = AttemptStatus.RUNNING
    """How it ended."""
    ended_s: float | None = None
    """Run-relative end."""
    check_passed: bool | None = None
    """Check verdict."""
    check_detail: str | None = None
    """What the check said."""
    check_simulated: bool = False
    """Whether the verdict came from the simulated backend instead of the check."""
    output_preview: str | None = None
    """Start of the output."""
    spent_usd: Decimal = Decimal(0)
    """Settled spend of its calls."""


@dataclass(frozen=True, kw_only=True)
class CallRecord:
    """One node of the calling tree: a model call or an agent/check span."""

    call_id: str
    """Unique id."""
    run_id: str
    """Run."""
    attempt_id: str | None
    """Attempt it belongs to (`None` for run-level calls such as warm-ups)."""
    parent_call_id: str | None
    """Parent node in the tree."""
    kind: CallKind
    """LLM call, agent span, check, or warm-up."""
    subtask: str | None
    """Subtask, if any."""
    model: str | None
    """Catalog model name."""
    litellm_model: str | None = None
    """Model string sent to litellm."""
    provider: str | None = None
    """Provider."""
    replica: str | None = None
    """Replica, for pooled models."""
    retry: int = 0
    """0 for the first try, then 1, 2, ... for retries of the same call."""
    input_tokens: int = 0
    """Prompt tokens."""
    output_tokens: int = 0
    """Output tokens."""
    cached_tokens: int = 0
    """Prompt tokens served from cache."""
    cost_usd: Decimal = Decimal(0)
    """Settled cost."""
    reserved_usd: Decimal = Decimal(0)
    """What was reserved before the call."""
    started_s: float = 0.0
    """Run-relative start."""
    latency_s: float = 0.0
    """Duration."""
    ttft_s: float | None = None
    """Time to first token."""
    status: CallStatus = CallStatus.OK
    """How it ended."""
    error: str | None = None
    """Error text for failed calls."""
    finish_reason: str | None = None
    """Provider finish reason."""
    response_id: str | None = None
    """The provider's id of the reply (e.g. `chatcmpl-...`), to match its logs and bills."""
    simulated: bool = False
    """Served by the simulated backend."""
    prompt: str | None = None
    """Prompt text (only when content recording is on)."""
    response: str | None = None
    """Response text (only when content recording is on)."""


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One policy decision."""

    run_id: str
    """Run."""
    index: int
    """0, 1, 2, ... within the run."""
    at_s: float
    """Run-relative time."""
    policy: str
    """Policy name."""
    state: Mapping[str, Any]
    """Summary of the PlanState (ready, completed, in flight, budget and time left)."""
    allocation: Mapping[str, Any]
    """Chosen assignments."""
    info: Mapping[str, Any]
    """The policy's explanation (candidates, estimated success of chosen and runner-up)."""
    decide_ms: float
    """Time the policy took."""


class Recorder(Protocol):
    """Receives the records of runs. All methods are async and must not block the event loop.

    `call_finished` must make the record durable before it returns: the
    executor settles the ledger only after it, so a crash never loses a
    completed call. `call_started` journals a model call before it is sent
    (status `in_flight`, its reservation as its cost), durable when it returns,
    so that a crash leaves a trace of every call that may have been billed.
    """

    async def run_started(self, run: RunRecord) -> None:
        """A run began."""
        ...

    async def decision_made(self, decision: DecisionRecord) -> None:
        """The policy decided."""
        ...

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        """An attempt began."""
        ...

    async def call_started(self, call: CallRecord) -> None:
        """A model call is about to be sent (status `in_flight`); durable when this returns."""
        ...

    async def call_finished(self, call: CallRecord) -> None:
        """A call (or span) ended; durable when this returns."""
        ...

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        """An attempt ended."""
        ...

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        """A subtask changed state."""
        ...

    async def run_finished(self, run: RunRecord) -> None:
        """A run ended."""
        ...

    async def aclose(self) -> None:
        """Flush and release resources."""
        ...
