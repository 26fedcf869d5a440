"""The `log_records` table."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
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
