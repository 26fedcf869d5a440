"""Tables the gateway owns: API keys, per-workflow role grants, the audit trail and batch runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, utcnow


class ApiKeyRow(Base):
    """An API key: only an HMAC-SHA-256 of its secret part is stored (see auth.py)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    # The visible part of the key (hk_<prefix>_...): how a presented key is looked up.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[Any] = mapped_column(default=list)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_api_keys_tenant_created", "tenant_id", "created_at"),)


class RoleGrantRow(Base):
    """A principal's role on one workflow (owner, editor, executor, viewer)."""

    __tablename__ = "workflow_grants"

    tenant_id: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal: Mapped[str] = mapped_column(String(300), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    granted_by: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_workflow_grants_principal", "tenant_id", "principal"),)


class AuditRow(Base):
    """Who did what to which object, when, and how it ended."""

    __tablename__ = "audit_records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    tenant_id: Mapped[str] = mapped_column(String(64))
    principal: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(300), default="")
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(128), default="")

    __table_args__ = (Index("ix_audit_records_tenant_ts", "tenant_id", "ts"),)


class WorkflowVersionAuthorRow(Base):
    """Who saved each version of a workflow through the gateway (the workflow service keeps
    the definitions; versions saved before this table existed have no row: author unknown)."""

    __tablename__ = "workflow_version_authors"

    workflow_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(300), default="")
    # The version this one restored (POST .../versions/{n}/rollback); None: an edit.
    rollback_of: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class NodePresetRow(Base):
    """One version of a node preset: a saved, named parameter set of a node type, per tenant.
    Every save is a new row (id, version); the highest version is the current one."""

    __tablename__ = "node_presets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    node_type: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    params: Mapped[Any] = mapped_column(default=dict)
    created_by: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_node_presets_tenant_type", "tenant_id", "node_type", "name"),)


class BatchRow(Base):
    """A batch run: one execution per item, at most `concurrency` running at once."""

    __tablename__ = "execution_batches"

    # Derived from (tenant, workflow, item keys): the same batch posted again is this one.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    workflow_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer)
    concurrency: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # The gateway replica driving it holds it until then (renewed); another takes over after.
    lease_until: Mapped[dt.datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_execution_batches_tenant_created", "tenant_id", "created_at"),)


class BatchItemRow(Base):
    """One input of a batch and the execution it started."""

    __tablename__ = "execution_batch_items"

    batch_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(256))
    inputs: Mapped[Any] = mapped_column()
    execution_id: Mapped[str | None] = mapped_column(String(36), default=None)
    # queued, running, then the execution's final status; rejected when it could not start.
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str] = mapped_column(String(1000), default="")


class FileRow(Base):
    """An uploaded file: its bytes are in the artifact store under artifact_key."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255), default="")
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    artifact_key: Mapped[str] = mapped_column(String(512))
    created_by: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Removed by the retention loop after this (HEDDLE_FILES_RETENTION_S); None: kept.
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index("ix_files_tenant_created", "tenant_id", "created_at"),
        Index("ix_files_expires", "expires_at"),
    )
