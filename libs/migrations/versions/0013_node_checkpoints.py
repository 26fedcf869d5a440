"""node_runs.checkpoint: the last checkpoint a running attempt reported (a loop's iterations)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    op.add_column("node_runs", sa.Column("checkpoint", json, nullable=True))


def downgrade() -> None:
    op.drop_column("node_runs", "checkpoint")
