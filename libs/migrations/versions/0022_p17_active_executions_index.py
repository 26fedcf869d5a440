"""executions: a partial index of each tenant's active top-level executions (issue #17)

The start's quota count (pg_writer's start lookup) runs as a generic plan on the writer's
connections; without this index that plan read every execution the tenant ever ran.

Revision ID: 0022_p17
Revises: 0021_p17
Create Date: 2026-12-03 07:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_p17"
down_revision = "0021_p17"
branch_labels = None
depends_on = None

# Written out here (not imported from the models): a migration keeps the schema it made.
_ACTIVE_TOP_LEVEL = "status IN ('paused', 'pending', 'running') AND parent_execution_id IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_executions_active_tenant",
        "executions",
        ["tenant_id"],
        postgresql_where=sa.text(_ACTIVE_TOP_LEVEL),
        sqlite_where=sa.text(_ACTIVE_TOP_LEVEL),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_active_tenant", table_name="executions")
