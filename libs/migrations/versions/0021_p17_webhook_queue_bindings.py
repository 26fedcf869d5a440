"""webhook_queue_bindings: the routing patterns the webhook queue is bound to (issue #17)

Revision ID: 0021_p17
Revises: 0020_cag
Create Date: 2026-12-02 14:40:00
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

import libs.common.db

revision = "0021_p17"
down_revision = "0020_cag"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_queue_bindings",
        sa.Column("pattern", sa.String(length=200), nullable=False),
        sa.Column("ensured_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pattern"),
    )
    # The bindings every deployment's queue had before: recorded as ensured long ago, so the
    # first reconcile unbinds them unless a subscription needs them.
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    table = sa.table(
        "webhook_queue_bindings",
        sa.column("pattern", sa.String()),
        sa.column("ensured_at", libs.common.db.UTCDateTime(timezone=True)),
    )
    op.bulk_insert(
        table,
        [
            {"pattern": "execution.*", "ensured_at": long_ago},
            {"pattern": "node.*", "ensured_at": long_ago},
        ],
    )


def downgrade() -> None:
    op.drop_table("webhook_queue_bindings")
