"""add trace_parent

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 11:38:12.659872
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        # The server default fills the rows that exist already (they have no trace root).
        batch_op.add_column(
            sa.Column("trace_parent", sa.String(length=64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("trace_parent")
