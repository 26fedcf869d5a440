"""The log service's tables: `log_records`, and the outbound webhooks it delivers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base

DEFAULT_TENANT = "default"

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_ALIASES = {"warn": "warning", "fatal": "critical", "exception": "error", "trace": "debug"}


def normalize_level(level: str) -> str | None:
    """The canonical level name, or None for an unknown one."""
    name = level.strip().lower()
    name = _ALIASES.get(name, name)
    return name if name in LEVELS else None


class LogRecordRow(Base):
    """One log line of a node attempt (or of an execution, node_id empty)."""

    __tablename__ = "log_records"

    # BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    execution_id: Mapped[str] = mapped_column(String(36), index=True, default="")
    node_id: Mapped[str] = mapped_column(String(64), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    level: Mapped[str] = mapped_column(String(16), default="info")
    level_no: Mapped[int] = mapped_column(Integer, default=20)
    message: Mapped[str] = mapped_column(Text, default="")
    ts: Mapped[dt.datetime] = mapped_column(index=True)
    trace_id: Mapped[str] = mapped_column(String(32), default="")
    logger: Mapped[str] = mapped_column(String(200), default="")
    service: Mapped[str] = mapped_column(String(64), default="")
    fields: Mapped[Any] = mapped_column(default=None, nullable=True)

    __table_args__ = (
        # QueryLogs reads one execution in (ts, id) order.
        Index("ix_log_records_execution_ts_id", "execution_id", "ts", "id"),
    )


class WebhookRow(Base):
    """An outbound webhook subscription: events of a tenant POSTed to a URL, signed.

    Written by the log service's WebhookService RPCs (the gateway's /api/v1/webhooks calls
    them), read by its deliverer.
    """

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    # Event type patterns (AMQP topic syntax: `execution.failed`, `node.*`, `#`).
    events: Mapped[Any] = mapped_column(default=list)
    # Only events of this workflow; None: every workflow of the tenant.
    workflow_id: Mapped[str | None] = mapped_column(String(36), default=None)
    # The HMAC key, encrypted with HEDDLE_SECRETS_KEY (libs.common.secrets.SecretBox).
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    description: Mapped[str] = mapped_column(String(500), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column()
    updated_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class WebhookBindingRow(Base):
    """A routing pattern the webhook queue is bound to on heddle.events, and when a create or
    update last needed it. The reconcile unbinds the patterns no active subscription needs
    unless ensured lately (a create in flight); the row lock orders it with those creates."""

    __tablename__ = "webhook_queue_bindings"

    pattern: Mapped[str] = mapped_column(String(200), primary_key=True)
    ensured_at: Mapped[dt.datetime] = mapped_column()


class WebhookDeliveryRow(Base):
    """One event for one subscription: its attempts, and where they ended (delivered, or
    dead after the last retry: the dead-letter record)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(36))
    tenant_id: Mapped[str] = mapped_column(String(64))
    # "<execution_id>:<seq>": the Idempotency-Key header; one delivery per subscription.
    event_id: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending")  # delivered, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column()
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # The replica delivering it holds it until then; a sweep takes over expired leases.
    lease_until: Mapped[dt.datetime | None] = mapped_column(default=None)

    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_subscription_created", "subscription_id", "created_at"),
        Index("ix_webhook_deliveries_status_lease", "status", "lease_until"),
    )


class EventWaiterRow(Base):
    """A wait_event node waiting for (name, correlation key): the index events are looked up
    in. Written when its `node.waiting` event is consumed; deleted by whoever delivers to it
    (the delete is the claim: one delivery per waiter)."""

    __tablename__ = "event_waiters"

    execution_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    correlation_key: Mapped[str] = mapped_column(String(500))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column()

    __table_args__ = (Index("ix_event_waiters_lookup", "tenant_id", "name", "correlation_key"),)


class ReceivedEventRow(Base):
    """An event POSTed to /api/v1/events. One that found no waiter is kept until expires_at
    for a node that starts waiting later (consumed_at set when one took it)."""

    __tablename__ = "received_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    correlation_key: Mapped[str] = mapped_column(String(500))
    data: Mapped[Any] = mapped_column(default=None, nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column()
    expires_at: Mapped[dt.datetime] = mapped_column()
    consumed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    delivered_to: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_received_events_lookup", "tenant_id", "name", "correlation_key", "received_at"),
        Index("ix_received_events_expires", "expires_at"),
    )
