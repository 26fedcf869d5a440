"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 11:29:57.683520
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import libs.common.db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "execution_events",
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("ts", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "seq"),
    )
    with op.batch_alter_table("execution_events", schema=None) as batch_op:
        batch_op.create_index("ix_events_unpublished", ["published", "execution_id"], unique=False)

    op.create_table(
        "executions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "inputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "outputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("idempotency_key", sa.String(length=300), nullable=True),
        sa.Column("parent_execution_id", sa.String(length=36), nullable=True),
        sa.Column("parent_node_id", sa.String(length=64), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=100), nullable=False),
        sa.Column("retry_of", sa.String(length=36), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_executions_idempotency"),
    )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_executions_status_lease", ["status", "lease_expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_executions_tenant_created", ["tenant_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_executions_workflow", ["workflow_id", "created_at"], unique=False)

    op.create_table(
        "log_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("level_no", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("ts", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("logger", sa.String(length=200), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column(
            "fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("log_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_log_records_execution_id"), ["execution_id"], unique=False
        )
        batch_op.create_index(
            "ix_log_records_execution_ts_id", ["execution_id", "ts", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_log_records_ts"), ["ts"], unique=False)

    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column(
            "inputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("misfire_policy", sa.String(length=16), nullable=False),
        sa.Column("misfire_limit", sa.Integer(), nullable=False),
        sa.Column("start_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("end_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("next_fire_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_fire_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index("ix_schedules_due", ["enabled", "next_fire_at"], unique=False)
        batch_op.create_index(
            "ix_schedules_tenant_workflow", ["tenant_id", "workflow_id"], unique=False
        )

    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.create_index(
            "ix_workflows_tenant_created", ["tenant_id", "created_at"], unique=False
        )

    op.create_table(
        "node_runs",
        sa.Column("execution_id", sa.String(length=36), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("node_type", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "output",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "active_ports",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "attempts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "waiting",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "inputs",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("started_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("due_at", libs.common.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["execution_id"], ["executions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("execution_id", "node_id"),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "definition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", libs.common.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workflow_id", "version"),
    )


def downgrade() -> None:

    op.drop_table("workflow_versions")
    op.drop_table("node_runs")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_index("ix_workflows_tenant_created")

    op.drop_table("workflows")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_schedules_tenant_workflow")
        batch_op.drop_index("ix_schedules_due")

    op.drop_table("schedules")
    with op.batch_alter_table("log_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_log_records_ts"))
        batch_op.drop_index("ix_log_records_execution_ts_id")
        batch_op.drop_index(batch_op.f("ix_log_records_execution_id"))

    op.drop_table("log_records")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_workflow")
        batch_op.drop_index("ix_executions_tenant_created")
        batch_op.drop_index("ix_executions_status_lease")

    op.drop_table("executions")
    with op.batch_alter_table("execution_events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_unpublished")

    op.drop_table("execution_events")
