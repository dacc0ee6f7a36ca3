"""Runs say what the planner's estimates came from (`runs.beliefs`: e.g. `trained v3, then priors`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `runs.beliefs`."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("beliefs", sa.String(200), nullable=True))


def downgrade() -> None:
    """Drop `runs.beliefs`."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("beliefs")
