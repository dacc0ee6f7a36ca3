"""Shared budgets above runs (per team, API token or workflow, optionally per day or month).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage._types import Money, UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `budgets` with a unique index on `name` and one on the scope."""
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope_kind", sa.String(16), nullable=False),
        sa.Column("scope_value", sa.String(200), nullable=False),
        sa.Column("limit_usd", Money(), nullable=False),
        sa.Column("window", sa.String(16), nullable=True),
        sa.Column("on_cross", sa.String(16), nullable=False),
        sa.Column("cross_at", sa.Float(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budgets"),
    )
    op.create_index("ix_budgets_name", "budgets", ["name"], unique=True)
    op.create_index("ix_budgets_scope_kind_scope_value", "budgets", ["scope_kind", "scope_value"])


def downgrade() -> None:
    """Drop `budgets`."""
    op.drop_index("ix_budgets_scope_kind_scope_value", table_name="budgets")
    op.drop_index("ix_budgets_name", table_name="budgets")
    op.drop_table("budgets")
