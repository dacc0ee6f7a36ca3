"""Runs carry the fencing token of the execution that may write their records (`runs.owner`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `runs.owner`."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop `runs.owner`."""
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("owner")
