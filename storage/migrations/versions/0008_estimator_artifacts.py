"""Learned estimators, versioned per workflow (`storage.estimator_artifacts`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage._types import UtcDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `estimator_artifacts` with a unique index on (workflow, version)."""
    op.create_table(
        "estimator_artifacts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_estimator_artifacts"),
    )
    op.create_index(
        "ix_estimator_artifacts_workflow_version", "estimator_artifacts", ["workflow", "version"], unique=True
    )


def downgrade() -> None:
    """Drop `estimator_artifacts`."""
    op.drop_index("ix_estimator_artifacts_workflow_version", table_name="estimator_artifacts")
    op.drop_table("estimator_artifacts")
