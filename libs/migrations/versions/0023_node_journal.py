"""node_journal: an agent's journal entries appended since its node row's checkpoint (issue #15)

A journal-only write (an agent's step) appended its entries to node_runs.checkpoint's journal
in place: jsonb_set rebuilt, recompressed and rewrote the whole journal on every step, O(steps)
per write. Each such write now inserts its entries as a row of their own, keyed by the journal
length they extend; the next write of the whole node row folds them into the checkpoint.

Revision ID: 0023_p15
Revises: 0022_p17
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0023_p15"
down_revision = "0022_p17"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    op.create_table(
        "node_journal",
        sa.Column(
            "execution_id",
            sa.String(36),
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column("at", sa.Integer(), primary_key=True),
        sa.Column("entries", json, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_journal")
