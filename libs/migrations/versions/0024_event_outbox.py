"""event_outbox: the relay's outbox as rows of its own, execution_events.published dropped

Every event row was inserted published=false and, once the broker had confirmed it, marked
published=true by an UPDATE; the flag was indexed (ix_events_unpublished), so no update was
HOT: every event row and its index entries were written twice and the table doubled in dead
tuples. A committed batch of events now inserts one event_outbox row naming its range of
sequence numbers, which the relay deletes once the broker has confirmed them; the event rows
are never rewritten. Events unpublished at the upgrade get an outbox row each (their range:
the event alone); the downgrade marks published every event that no outbox row names.

Revision ID: 0024_p17
Revises: 0023_p15
Create Date: 2026-12-04 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import libs.common.db

revision = "0024_p17"
down_revision = "0023_p15"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("low_seq", sa.Integer(), nullable=False),
        sa.Column("high_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "low_seq"),
    )
    op.execute(
        "INSERT INTO event_outbox (execution_id, low_seq, high_seq, created_at)"
        " SELECT execution_id, seq, seq, ts FROM execution_events WHERE NOT published"
    )
    with op.batch_alter_table("execution_events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_unpublished")
        batch_op.drop_column("published")


def downgrade() -> None:
    with op.batch_alter_table("execution_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("published", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.execute(
        "UPDATE execution_events SET published = false WHERE EXISTS ("
        " SELECT 1 FROM event_outbox AS o WHERE o.execution_id = execution_events.execution_id"
        " AND execution_events.seq BETWEEN o.low_seq AND o.high_seq)"
    )
    with op.batch_alter_table("execution_events", schema=None) as batch_op:
        batch_op.alter_column("published", server_default=None)
        batch_op.create_index("ix_events_unpublished", ["published", "execution_id"], unique=False)
    op.drop_table("event_outbox")
