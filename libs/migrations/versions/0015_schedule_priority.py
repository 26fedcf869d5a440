"""schedules.priority: the priority (0-9) of the executions a schedule starts

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "schedules", sa.Column("priority", sa.Integer(), server_default="5", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("schedules", "priority")
