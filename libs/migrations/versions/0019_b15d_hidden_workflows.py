"""workflows.hidden: workflows the platform makes for itself (an agent's chat workflow, the
one-node workflow a delegated agent runs in) stay out of the listings; executions are
looked up by parent (a node's child executions) (issue #15)

Revision ID: 0019_b15d
Revises: 0018
Create Date: 2026-12-02 13:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_b15d"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "workflows",
        sa.Column("hidden", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # The chat workflows made before this revision are hidden too.
    op.execute(
        "UPDATE workflows SET hidden = true WHERE id IN "
        "(SELECT chat_workflow_id FROM agents WHERE chat_workflow_id IS NOT NULL)"
    )
    op.create_index("ix_executions_parent", "executions", ["parent_execution_id", "parent_node_id"])


def downgrade() -> None:
    op.drop_index("ix_executions_parent", table_name="executions")
    op.drop_column("workflows", "hidden")
