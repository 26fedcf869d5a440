"""wait_event: the index of waiting nodes and the events received

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import libs.common.db

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_waiters",
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("correlation_key", sa.String(length=500), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "node_id"),
    )
    op.create_index(
        "ix_event_waiters_lookup",
        "event_waiters",
        ["tenant_id", "name", "correlation_key"],
        unique=False,
    )
    op.create_table(
        "received_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("correlation_key", sa.String(length=500), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("received_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_to", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_received_events_lookup",
        "received_events",
        ["tenant_id", "name", "correlation_key", "received_at"],
        unique=False,
    )
    op.create_index("ix_received_events_expires", "received_events", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_received_events_expires", table_name="received_events")
    op.drop_index("ix_received_events_lookup", table_name="received_events")
    op.drop_table("received_events")
    op.drop_index("ix_event_waiters_lookup", table_name="event_waiters")
    op.drop_table("event_waiters")
