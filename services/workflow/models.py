"""Tables the workflow service owns: definitions and versions, executions, node runs, and the
execution events (which are both the event history and the outbox of the relay)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, utcnow
from services.workflow.status import ACTIVE_EXECUTION_STATUSES

#: The rows a start's quota counts (a tenant's active top-level executions), as SQL with the
#: statuses written out: a partial index's predicate is only matched by a query that names
#: the same constants (a bound array, as in a generic plan, matches nothing).
ACTIVE_TOP_LEVEL = "status IN ({}) AND parent_execution_id IS NULL".format(
    ", ".join(f"'{status}'" for status in sorted(ACTIVE_EXECUTION_STATUSES))
)

DEFAULT_TENANT = "default"


class WorkflowRow(Base):
    __tablename__ = "workflows"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    latest_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    #: Made by the platform for itself (an agent's chat workflow, the one-node workflow a
    #: delegated agent runs in): runnable and readable by id, left out of the listings.
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_workflows_tenant_created", "tenant_id", "created_at"),)


class WorkflowVersionRow(Base):
    __tablename__ = "workflow_versions"

    workflow_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ExecutionRow(Base):
    __tablename__ = "executions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    workflow_id: Mapped[str] = mapped_column(String(36))
    workflow_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    inputs: Mapped[Any] = mapped_column(default=None, nullable=True)
    outputs: Mapped[Any] = mapped_column(default=None, nullable=True)
    error: Mapped[Any] = mapped_column(default=None, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(300), default=None)
    parent_execution_id: Mapped[str | None] = mapped_column(String(36), default=None)
    parent_node_id: Mapped[str | None] = mapped_column(String(64), default=None)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    trigger: Mapped[str] = mapped_column(String(100), default="api")
    retry_of: Mapped[str | None] = mapped_column(String(36), default=None)
    # A fork's origin (POST /executions/{id}/fork): the execution and node it re-runs from.
    forked_from_execution_id: Mapped[str | None] = mapped_column(String(36), default=None)
    forked_from_node: Mapped[str | None] = mapped_column(String(64), default=None)
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    # W3C traceparent of the execution.start span: the parent of every node attempt's span.
    trace_parent: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Ownership: the replica running it renews the lease; an expired lease is taken over.
    owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Runs of this execution that ended in an exception of its runner (or of its takeover):
    # the poison-execution guard fails it after HEDDLE_MAX_RUNNER_CRASHES of them.
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # 0-9: a saturated replica's slots go to higher-priority executions' ready nodes first.
    priority: Mapped[int] = mapped_column(Integer, default=5, server_default="5")

    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_executions_idempotency"),
        Index("ix_executions_tenant_created", "tenant_id", "created_at"),
        Index("ix_executions_workflow", "workflow_id", "created_at"),
        Index("ix_executions_status_lease", "status", "lease_expires_at"),
        # A node's child executions (subworkflow, map, delegation): the execution detail.
        Index("ix_executions_parent", "parent_execution_id", "parent_node_id"),
        Index("ix_executions_forked_from", "forked_from_execution_id"),
        # The start's quota count reads only the tenant's active executions, whatever the
        # statistics say: the writer's generic plan of the count went through
        # ix_executions_tenant_created and filtered every execution the tenant ever ran
        # (20 ms at 20,000 executions; ~200 index fetches per start in bench/throughput.py).
        Index(
            "ix_executions_active_tenant",
            "tenant_id",
            postgresql_where=text(ACTIVE_TOP_LEVEL),
            sqlite_where=text(ACTIVE_TOP_LEVEL),
        ),
        # Room on each page for the fence's update of every step to stay HOT (0025).
        {"postgresql_with": {"fillfactor": 80}},
    )


class NodeRunRow(Base):
    __tablename__ = "node_runs"
    # Room on each page for a node's start and end to update its row HOT (0025).
    __table_args__ = {"postgresql_with": {"fillfactor": 80}}

    execution_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    output: Mapped[Any] = mapped_column(default=None, nullable=True)
    error: Mapped[Any] = mapped_column(default=None, nullable=True)
    # None = every normal port was active; otherwise the list that was.
    active_ports: Mapped[Any] = mapped_column(default=None, nullable=True)
    attempts: Mapped[Any] = mapped_column(default=list)
    waiting: Mapped[Any] = mapped_column(default=None, nullable=True)
    inputs: Mapped[Any] = mapped_column(default=None, nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # When a retry or a human-input timeout is due (re-armed after a crash).
    due_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # The last checkpoint an attempt reported (a loop's iterations): handed back to the next
    # attempt as system.checkpoint.
    checkpoint: Mapped[Any] = mapped_column(default=None, nullable=True)


class NodeJournalRow(Base):
    """Journal entries of an agent's node appended since its row's checkpoint was written
    whole: one row per journal-only write, `at` the journal length its entries extend (the
    PostgreSQL writer inserts them instead of rewriting the checkpoint; its next write of the
    whole row folds them in). A node's journal is its checkpoint's, then these in `at` order
    (repository.node_runs reads it so)."""

    __tablename__ = "node_journal"

    execution_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[int] = mapped_column(Integer, primary_key=True)
    entries: Mapped[Any] = mapped_column()


class EventRow(Base):
    __tablename__ = "execution_events"

    execution_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    node_id: Mapped[str | None] = mapped_column(String(64), default=None)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    data: Mapped[Any] = mapped_column(default=None, nullable=True)
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    workflow_id: Mapped[str] = mapped_column(String(36), default="")


class OutboxRow(Base):
    """A committed batch of an execution's events not yet confirmed by the broker: inserted
    with the events (same statement or transaction), deleted by the relay once the broker
    has confirmed them, read by the sweep when a crash left it behind. The event rows are
    never rewritten (a `published` flag on each cost an UPDATE of every event row, not HOT:
    the flag was indexed)."""

    __tablename__ = "event_outbox"

    execution_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: The batch's first and last sequence numbers (its events are those between).
    low_seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    high_seq: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SecretRow(Base):
    """A tenant's secret: AES-256-GCM ciphertext (nonce || sealed) bound to tenant and name."""

    __tablename__ = "secrets"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WebhookBindingRow(Base):
    """Which workflows a webhook trigger starts (kept in step with the latest version)."""

    __tablename__ = "webhook_bindings"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )


class ReplicaRow(Base):
    """A live workflow replica and the name of the database session it holds open: a
    replica whose session is gone is dead (see liveness.py), and its executions are
    released at once rather than when their leases lapse."""

    __tablename__ = "workflow_replicas"

    replica_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    session_name: Mapped[str] = mapped_column(String(63))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ExecutionRequestRow(Base):
    """A control or input request for an execution another replica drives: the owner picks it
    up, applies it and records the outcome for the replica that received the call."""

    __tablename__ = "execution_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[Any] = mapped_column(default=None, nullable=True)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[Any] = mapped_column(default=None, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
