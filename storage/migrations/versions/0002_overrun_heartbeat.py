"""Runs record their budget overrun and a heartbeat; runs are indexed by outcome; calls keep the reply id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage._types import Money, UtcDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `runs.overrun_usd`, `runs.heartbeat_at`, an index on `runs.outcome`, `calls.response_id`."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("overrun_usd", Money(), server_default="0", nullable=False))
        batch.add_column(sa.Column("heartbeat_at", UtcDateTime(), nullable=True))
    op.create_index("ix_runs_outcome", "runs", ["outcome"])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("response_id", sa.String(200), nullable=True))


def downgrade() -> None:
    """Drop what `upgrade` added."""
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("response_id")
    op.drop_index("ix_runs_outcome", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("overrun_usd")
