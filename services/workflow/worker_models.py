"""Tables of the worker side of the workflow service: the custom node types tenants' workers
registered, and which replica has workers connected for which of them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, utcnow


class CustomNodeTypeRow(Base):
    """A custom node type of one tenant, as its worker registered it (a NodeTypeSpec as JSON).

    One row per (tenant, type): a worker registering a new version replaces the row; the same
    version with a different schema is refused (ALREADY_EXISTS).
    """

    __tablename__ = "custom_node_types"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the canonical spec JSON
    spec: Mapped[dict[str, Any]] = mapped_column()
    worker_name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WorkerPresenceRow(Base):
    """Replica R has `workers` workers connected that serve (tenant, type); refreshed every
    few seconds, a row older than a few refreshes is stale (its replica died). Another replica
    relays attempts of that type to `address` (R's internal gRPC port, WorkerService.Relay)."""

    __tablename__ = "worker_presence"

    replica_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_type: Mapped[str] = mapped_column(String(200), primary_key=True)
    address: Mapped[str] = mapped_column(String(300))
    workers: Mapped[int] = mapped_column(Integer, default=0)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_worker_presence_type", "tenant_id", "node_type"),)
