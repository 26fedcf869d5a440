"""The `schedules` table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, utcnow

DEFAULT_TENANT = "default"


class Schedule(Base):
    """A cron schedule of one workflow; `next_fire_at` is NULL once it has ended."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    name: Mapped[str] = mapped_column(String(200), default="")
    workflow_id: Mapped[str] = mapped_column(String(36))
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    inputs: Mapped[Any] = mapped_column(default=None, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    misfire_policy: Mapped[str] = mapped_column(String(16), default="skip")
    misfire_limit: Mapped[int] = mapped_column(Integer, default=10)
    # 0-9: the priority of the executions it starts.
    priority: Mapped[int] = mapped_column(Integer, default=5, server_default="5")
    start_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    end_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    next_fire_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_fire_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        # The ticker's query: enabled schedules by next fire time.
        Index("ix_schedules_due", "enabled", "next_fire_at"),
        Index("ix_schedules_tenant_workflow", "tenant_id", "workflow_id"),
    )
