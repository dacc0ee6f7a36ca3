"""The database schema, as typed SQLAlchemy ORM models.

Tables mirror the records of `orchestrator.records`: `runs`,
`subtask_executions`, `attempts`, `calls` (the calling tree) and
`plan_decisions`; `run_model_stats`, pre-aggregates of a stopped run's calls per
model (see `storage.run_rollups`); `api_tokens`, the credentials of the HTTP API
(see `storage.tokens`); `budgets`, the shared budgets above runs (see
`storage.shared_budgets`); and `estimator_artifacts`, the learned estimators,
versioned per workflow (see `storage.estimator_artifacts`). Money is exact (`Money`:
`NUMERIC(20, 9)` on PostgreSQL), times are UTC, free-form documents are JSON.

`calls.parent_call_id` points at another call of the same run but carries no
foreign-key constraint on purpose: a child (a model call inside an agent
span) finishes, and must be durable, before its parent span ends and is
written. The `parent`/`children` relationships still navigate it.

The migrations in `storage/migrations/versions` create exactly this schema;
a test compares the two.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship, remote

from storage._types import JSON_DOC, Money, UtcDateTime
from storage.run_rollups import stats_columns

__all__ = [
    "RUN_MODEL_STATS",
    "ApiToken",
    "Attempt",
    "Base",
    "Budget",
    "Call",
    "EstimatorArtifactRow",
    "PlanDecision",
    "Run",
    "SubtaskExecution",
]

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_ID = 64
_NAME = 200
_STATUS = 32
_BELIEFS = 200


class Base(DeclarativeBase):
    """Declarative base with a fixed constraint naming convention (stable migrations)."""

    metadata = MetaData(naming_convention=_NAMING)


class Run(Base):
    """One run of a workflow."""

    __tablename__ = "runs"
    __table_args__ = (
        Index(None, "started_at"),
        Index(None, "workflow", "started_at"),
        Index(None, "outcome"),
    )

    run_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    """Unique id."""
    workflow: Mapped[str] = mapped_column(String(_NAME))
    """Workflow name."""
    policy: Mapped[str] = mapped_column(String(_NAME))
    """Policy name."""
    budget_usd: Mapped[Decimal] = mapped_column(Money())
    """Hard budget."""
    deadline_s: Mapped[float | None] = mapped_column(Float)
    """Deadline in seconds; `NULL` means none."""
    seed: Mapped[int] = mapped_column(BigInteger)
    """Seed of the run."""
    simulated: Mapped[bool] = mapped_column(Boolean)
    """Whether any model was simulated."""
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    """Wall-clock start (UTC)."""
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    """Wall-clock end (UTC)."""
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    """Run inputs."""
    outcome: Mapped[str] = mapped_column(String(_STATUS))
    """`orchestrator.records.Outcome` value."""
    reason: Mapped[str | None] = mapped_column(Text)
    """Why it failed."""
    spent_usd: Mapped[Decimal] = mapped_column(Money())
    """Settled spend."""
    overrun_usd: Mapped[Decimal] = mapped_column(Money(), server_default="0")
    """Billed above the reservations, beyond the budget (see `RunRecord.overrun_usd`)."""
    makespan_s: Mapped[float | None] = mapped_column(Float)
    """Start to end."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    """Last sign of life of the process running it (UTC); stale while `running` = abandoned."""
    beliefs: Mapped[str | None] = mapped_column(String(_BELIEFS))
    """What the planner's estimates came from (`RunRecord.beliefs`)."""
    owner: Mapped[str | None] = mapped_column(String(_ID))
    """The execution that may write the run's records (a fencing token, `SqlRecorder(fence=)`);
    set by its first write and by a takeover (`storage.resume.resume_point(owner=)`); `NULL`: any.
    Never overwritten by a run row's upsert."""

    subtasks: Mapped[list[SubtaskExecution]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )
    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )
    calls: Mapped[list[Call]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )
    decisions: Mapped[list[PlanDecision]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class SubtaskExecution(Base):
    """A subtask's execution within a run."""

    __tablename__ = "subtask_executions"

    run_id: Mapped[str] = mapped_column(
        String(_ID), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    """Run."""
    subtask: Mapped[str] = mapped_column(String(_NAME), primary_key=True)
    """Subtask name."""
    status: Mapped[str] = mapped_column(String(_STATUS))
    """`orchestrator.records.SubtaskStatus` value."""
    attempts: Mapped[int] = mapped_column(Integer)
    """Attempts started."""
    winner_attempt_id: Mapped[str | None] = mapped_column(String(_ID))
    """Attempt whose output was taken."""
    output_preview: Mapped[str | None] = mapped_column(Text)
    """Start of the output."""
    output: Mapped[Any] = mapped_column(JSON_DOC, nullable=True)
    """The winner's output, whole (JSON)."""
    started_s: Mapped[float | None] = mapped_column(Float)
    """Run-relative start."""
    ended_s: Mapped[float | None] = mapped_column(Float)
    """Run-relative end."""
    spent_usd: Mapped[Decimal] = mapped_column(Money())
    """Settled spend."""

    run: Mapped[Run] = relationship(back_populates="subtasks")


class Attempt(Base):
    """One sample of a subtask on a model."""

    __tablename__ = "attempts"
    __table_args__ = (Index(None, "run_id", "started_s"),)

    attempt_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    """Unique id."""
    run_id: Mapped[str] = mapped_column(String(_ID), ForeignKey("runs.run_id", ondelete="CASCADE"))
    """Run."""
    subtask: Mapped[str] = mapped_column(String(_NAME))
    """Subtask."""
    model: Mapped[str] = mapped_column(String(_NAME))
    """Model name."""
    batch: Mapped[int] = mapped_column(Integer)
    """Batch of the subtask."""
    sample: Mapped[int] = mapped_column(Integer)
    """Index within the batch."""
    max_tokens: Mapped[int] = mapped_column(Integer)
    """Per-call output cap."""
    started_s: Mapped[float] = mapped_column(Float)
    """Run-relative start."""
    status: Mapped[str] = mapped_column(String(_STATUS))
    """`orchestrator.records.AttemptStatus` value."""
    ended_s: Mapped[float | None] = mapped_column(Float)
    """Run-relative end."""
    check_passed: Mapped[bool | None] = mapped_column(Boolean)
    """Check verdict."""
    check_detail: Mapped[str | None] = mapped_column(Text)
    """What the check said."""
    check_simulated: Mapped[bool] = mapped_column(Boolean)
    """Verdict from the simulated backend."""
    output_preview: Mapped[str | None] = mapped_column(Text)
    """Start of the output."""
    spent_usd: Mapped[Decimal] = mapped_column(Money())
    """Settled spend."""

    run: Mapped[Run] = relationship(back_populates="attempts")
    calls: Mapped[list[Call]] = relationship(back_populates="attempt")


class Call(Base):
    """One node of the calling tree."""

    __tablename__ = "calls"
    __table_args__ = (
        Index(None, "run_id", "started_s"),
        Index(None, "attempt_id"),
        Index(None, "parent_call_id"),
        Index(None, "replica"),
    )

    call_id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    """Unique id."""
    run_id: Mapped[str] = mapped_column(String(_ID), ForeignKey("runs.run_id", ondelete="CASCADE"))
    """Run."""
    attempt_id: Mapped[str | None] = mapped_column(
        String(_ID), ForeignKey("attempts.attempt_id", ondelete="CASCADE")
    )
    """Attempt, or `NULL` for run-level calls (warm-ups)."""
    parent_call_id: Mapped[str | None] = mapped_column(String(_ID))
    """Parent call (no FK constraint: children are written before their parent)."""
    kind: Mapped[str] = mapped_column(String(_STATUS))
    """`orchestrator.records.CallKind` value."""
    subtask: Mapped[str | None] = mapped_column(String(_NAME))
    """Subtask."""
    model: Mapped[str | None] = mapped_column(String(_NAME))
    """Catalog model name."""
    litellm_model: Mapped[str | None] = mapped_column(String(_NAME))
    """Model string sent to litellm."""
    provider: Mapped[str | None] = mapped_column(String(_NAME))
    """Provider."""
    replica: Mapped[str | None] = mapped_column(String(_NAME))
    """Replica of a pooled model."""
    retry: Mapped[int] = mapped_column(Integer)
    """Retry number."""
    input_tokens: Mapped[int] = mapped_column(Integer)
    """Prompt tokens."""
    output_tokens: Mapped[int] = mapped_column(Integer)
    """Output tokens."""
    cached_tokens: Mapped[int] = mapped_column(Integer)
    """Prompt tokens served from cache."""
    cost_usd: Mapped[Decimal] = mapped_column(Money())
    """Settled cost."""
    reserved_usd: Mapped[Decimal] = mapped_column(Money())
    """Reserved before the call."""
    started_s: Mapped[float] = mapped_column(Float)
    """Run-relative start."""
    latency_s: Mapped[float] = mapped_column(Float)
    """Duration."""
    ttft_s: Mapped[float | None] = mapped_column(Float)
    """Time to first token."""
    status: Mapped[str] = mapped_column(String(_STATUS))
    """`orchestrator.records.CallStatus` value."""
    error: Mapped[str | None] = mapped_column(Text)
    """Error text."""
    finish_reason: Mapped[str | None] = mapped_column(String(_NAME))
    """Provider finish reason."""
    response_id: Mapped[str | None] = mapped_column(String(_NAME))
    """The provider's id of the reply."""
    simulated: Mapped[bool] = mapped_column(Boolean)
    """Served by the simulated backend."""
    prompt: Mapped[str | None] = mapped_column(Text)
    """Prompt text (when content recording is on)."""
    response: Mapped[str | None] = mapped_column(Text)
    """Response text (when content recording is on)."""

    run: Mapped[Run] = relationship(back_populates="calls")
    attempt: Mapped[Attempt | None] = relationship(back_populates="calls")
    parent: Mapped[Call | None] = relationship(
        primaryjoin=lambda: remote(Call.call_id) == foreign(Call.parent_call_id),
        back_populates="children",
        viewonly=True,
    )
    children: Mapped[list[Call]] = relationship(
        primaryjoin=lambda: Call.call_id == foreign(Call.parent_call_id),
        back_populates="parent",
        viewonly=True,
        order_by=lambda: Call.started_s,
    )


class PlanDecision(Base):
    """One policy decision."""

    __tablename__ = "plan_decisions"

    run_id: Mapped[str] = mapped_column(
        String(_ID), ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    """Run."""
    decision_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    """0, 1, 2, ... within the run."""
    at_s: Mapped[float] = mapped_column(Float)
    """Run-relative time."""
    policy: Mapped[str] = mapped_column(String(_NAME))
    """Policy name."""
    state: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    """Summary of the plan state."""
    allocation: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    """Chosen assignments."""
    info: Mapped[dict[str, Any]] = mapped_column(JSON_DOC)
    """The policy's explanation."""
    decide_ms: Mapped[float] = mapped_column(Float)
    """Time the policy took."""

    run: Mapped[Run] = relationship(back_populates="decisions")


class ApiToken(Base):
    """A credential of the HTTP API: only the SHA-256 of the token is kept (see `storage.tokens`)."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index(None, "token_hash", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    """Short id, for `budgetflow tokens revoke ID`."""
    name: Mapped[str] = mapped_column(String(_NAME))
    """What the token is for (not unique: a rotated token may keep its name)."""
    token_hash: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of the whole token; the token itself is never stored."""
    scopes: Mapped[str] = mapped_column(String(_NAME))
    """Granted scopes, space-separated (`read`, `submit`, `admin`)."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    """When it was created (UTC)."""
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    """When it stops working (UTC); `NULL` means never."""
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    """Last successful use (UTC), to the minute."""
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    """When it was revoked (UTC); `NULL` while it is live."""


class Budget(Base):
    """A shared budget above runs: a team's, an API token's or a workflow's (`storage.shared_budgets`).

    Only the definition is here; its money (spent, reserved, per window) is in Redis."""

    __tablename__ = "budgets"
    __table_args__ = (Index(None, "name", unique=True), Index(None, "scope_kind", "scope_value"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Random hex id; its Redis counters are keyed by it, so a name defined again starts from zero."""
    name: Mapped[str] = mapped_column(String(_NAME))
    """Unique name (the `budget` label of its metrics)."""
    scope_kind: Mapped[str] = mapped_column(String(16))
    """`team`, `token` or `workflow`."""
    scope_value: Mapped[str] = mapped_column(String(_NAME))
    """The team's name, the API token's id, or the workflow's name."""
    limit_usd: Mapped[Decimal] = mapped_column(Money())
    """The limit per window (or in all)."""
    window: Mapped[str | None] = mapped_column(String(16))
    """`day` or `month` (UTC calendar windows); `NULL`: one window forever."""
    on_cross: Mapped[str] = mapped_column(String(16))
    """What happens once spend passes `cross_at` of the limit: `none`, `downgrade` or `pause`."""
    cross_at: Mapped[float] = mapped_column(Float)
    """The fraction of the limit where `on_cross` applies."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    """When it was defined (UTC)."""


class EstimatorArtifactRow(Base):
    """One stored learned estimator of a workflow, numbered 1, 2, 3... (`storage.estimator_artifacts`)."""

    __tablename__ = "estimator_artifacts"
    __table_args__ = (Index(None, "workflow", "version", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    """Surrogate key."""
    workflow: Mapped[str] = mapped_column(String(_NAME))
    """The workflow it was fitted for."""
    version: Mapped[int] = mapped_column(Integer)
    """Its number among the workflow's artifacts: 1 for the first, one more for each next."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    """When it was fitted (UTC)."""
    body: Mapped[str] = mapped_column(Text)
    """The artifact as JSON (`EstimatorArtifact.to_json`); its version is the column's."""


RUN_MODEL_STATS = Table(
    "run_model_stats",
    Base.metadata,
    *stats_columns(),
    Index(None, "started_at"),
    Index(None, "model"),
)
"""One row per stopped run and model it called: sums and histograms (`storage.run_rollups`)."""
