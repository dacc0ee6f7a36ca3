"""Initial schema: runs, subtask executions, attempts, calls, plan decisions.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage._types import JSON_DOC, Money, UtcDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the tables and their indexes."""
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("budget_usd", Money(), nullable=False),
        sa.Column("deadline_s", sa.Float(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("inputs", JSON_DOC, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("spent_usd", Money(), nullable=False),
        sa.Column("makespan_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
    )
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_index("ix_runs_workflow_started_at", "runs", ["workflow", "started_at"])

    op.create_table(
        "subtask_executions",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("subtask", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("winner_attempt_id", sa.String(64), nullable=True),
        sa.Column("output_preview", sa.Text(), nullable=True),
        sa.Column("started_s", sa.Float(), nullable=True),
        sa.Column("ended_s", sa.Float(), nullable=True),
        sa.Column("spent_usd", Money(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.run_id"],
            name="fk_subtask_executions_run_id_runs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "subtask", name="pk_subtask_executions"),
    )

    op.create_table(
        "attempts",
        sa.Column("attempt_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("subtask", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("sample", sa.Integer(), nullable=False),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column("started_s", sa.Float(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("ended_s", sa.Float(), nullable=True),
        sa.Column("check_passed", sa.Boolean(), nullable=True),
        sa.Column("check_detail", sa.Text(), nullable=True),
        sa.Column("check_simulated", sa.Boolean(), nullable=False),
        sa.Column("output_preview", sa.Text(), nullable=True),
        sa.Column("spent_usd", Money(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name="fk_attempts_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("attempt_id", name="pk_attempts"),
    )
    op.create_index("ix_attempts_run_id_started_s", "attempts", ["run_id", "started_s"])

    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("attempt_id", sa.String(64), nullable=True),
        # No FK on purpose: a child call is written before its parent span ends.
        sa.Column("parent_call_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subtask", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("litellm_model", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(200), nullable=True),
        sa.Column("replica", sa.String(200), nullable=True),
        sa.Column("retry", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", Money(), nullable=False),
        sa.Column("reserved_usd", Money(), nullable=False),
        sa.Column("started_s", sa.Float(), nullable=False),
        sa.Column("latency_s", sa.Float(), nullable=False),
        sa.Column("ttft_s", sa.Float(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finish_reason", sa.String(200), nullable=True),
        sa.Column("simulated", sa.Boolean(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_calls_run_id_runs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["attempts.attempt_id"],
            name="fk_calls_attempt_id_attempts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_id", name="pk_calls"),
    )
    op.create_index("ix_calls_run_id_started_s", "calls", ["run_id", "started_s"])
    op.create_index("ix_calls_attempt_id", "calls", ["attempt_id"])
    op.create_index("ix_calls_parent_call_id", "calls", ["parent_call_id"])

    op.create_table(
        "plan_decisions",
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("decision_index", sa.Integer(), nullable=False),
        sa.Column("at_s", sa.Float(), nullable=False),
        sa.Column("policy", sa.String(200), nullable=False),
        sa.Column("state", JSON_DOC, nullable=False),
        sa.Column("allocation", JSON_DOC, nullable=False),
        sa.Column("info", JSON_DOC, nullable=False),
        sa.Column("decide_ms", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name="fk_plan_decisions_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "decision_index", name="pk_plan_decisions"),
    )


def downgrade() -> None:
    """Drop everything this revision created."""
    op.drop_table("plan_decisions")
    op.drop_index("ix_calls_parent_call_id", table_name="calls")
    op.drop_index("ix_calls_attempt_id", table_name="calls")
    op.drop_index("ix_calls_run_id_started_s", table_name="calls")
    op.drop_table("calls")
    op.drop_index("ix_attempts_run_id_started_s", table_name="attempts")
    op.drop_table("attempts")
    op.drop_table("subtask_executions")
    op.drop_index("ix_runs_workflow_started_at", table_name="runs")
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.drop_table("runs")
