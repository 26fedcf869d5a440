"""batch runs and their items

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import libs.common.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_batches",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column("created_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_until", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_execution_batches_tenant_created",
        "execution_batches",
        ["tenant_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "execution_batch_items",
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=256), nullable=False),
        sa.Column(
            "inputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("execution_id", sa.String(length=36), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "position"),
    )


def downgrade() -> None:
    op.drop_table("execution_batch_items")
    op.drop_index("ix_execution_batches_tenant_created", table_name="execution_batches")
    op.drop_table("execution_batches")
