"""executions.priority: 0-9, higher first when a replica's node slots are saturated

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 00:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "executions", sa.Column("priority", sa.Integer(), server_default="5", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("executions", "priority")
