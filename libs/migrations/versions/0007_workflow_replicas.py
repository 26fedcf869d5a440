"""workflow replicas

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:21:02.736147
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import libs.common.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_replicas",
        sa.Column("replica_id", sa.String(length=100), nullable=False),
        sa.Column("session_name", sa.String(length=63), nullable=False),
        sa.Column("started_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("replica_id"),
    )


def downgrade() -> None:
    op.drop_table("workflow_replicas")
