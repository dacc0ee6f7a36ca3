"""Subtask executions keep the winner's output whole (JSON), not only a preview.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage._types import JSON_DOC

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `subtask_executions.output`."""
    with op.batch_alter_table("subtask_executions") as batch:
        batch.add_column(sa.Column("output", JSON_DOC, nullable=True))


def downgrade() -> None:
    """Drop `subtask_executions.output`."""
    with op.batch_alter_table("subtask_executions") as batch:
        batch.drop_column("output")
