"""Pre-aggregates per stopped run and model (`run_model_stats`), filled for the runs
already stopped; calls indexed by replica (the pool page).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from storage.run_rollups import rebuild_rollups, stats_columns

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `run_model_stats` with its indexes, then roll up every stopped run."""
    op.create_table("run_model_stats", *stats_columns())
    op.create_index("ix_run_model_stats_started_at", "run_model_stats", ["started_at"])
    op.create_index("ix_run_model_stats_model", "run_model_stats", ["model"])
    op.create_index("ix_calls_replica", "calls", ["replica"])
    rebuild_rollups(op.get_bind())


def downgrade() -> None:
    """Drop `run_model_stats` and the index on `calls.replica`."""
    op.drop_index("ix_calls_replica", table_name="calls")
    op.drop_index("ix_run_model_stats_model", table_name="run_model_stats")
    op.drop_index("ix_run_model_stats_started_at", table_name="run_model_stats")
    op.drop_table("run_model_stats")
