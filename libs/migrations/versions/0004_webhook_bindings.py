"""webhook bindings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 12:05:50.157377
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_bindings",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "name", "workflow_id"),
    )


def downgrade() -> None:
    op.drop_table("webhook_bindings")
