"""Settings of the log service."""

from __future__ import annotations

from pydantic import Field

from libs.common.settings import CommonSettings


class LogSettings(CommonSettings):
    """Options of the log service (HEDDLE_ prefix)."""

    retention_days: float = Field(
        default=30.0, gt=0, description="Log records older than this many days are deleted."
    )
    retention_interval_s: float = Field(
        default=3600.0, gt=0, description="How often the retention sweep runs."
    )
    retention_batch_rows: int = Field(
        default=5000, ge=1, description="Rows deleted per statement by the retention sweep."
    )
    batch_size: int = Field(
        default=500, ge=1, description="Records inserted per batch (one INSERT) at most."
    )
    flush_interval_s: float = Field(
        default=0.25,
        gt=0,
        description="Longest a consumed record waits before its batch is written.",
    )
    records_queue: str = Field(
        default="log.records", description="Durable queue consuming exchange heddle.logs."
    )
    events_queue: str = Field(
        default="log.events", description="Durable queue consuming `log` events of heddle.events."
    )
    default_page_size: int = Field(default=100, ge=1, description="QueryLogs page size if unset.")
    max_page_size: int = Field(default=1000, ge=1, description="Largest QueryLogs page.")
