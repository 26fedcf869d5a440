"""Settings of the log service."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from libs.common.settings import CommonSettings, split_csv


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
    webhooks_enabled: bool = Field(
        default=True, description="Deliver outbound webhooks (/api/v1/webhooks) from here."
    )
    webhook_queue: str = Field(
        default="log.webhooks",
        description="Durable queue of heddle.events execution.* and node.* events that the "
        "webhook deliverer consumes (log replicas compete on it).",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="POSTs of one event before its delivery is dead."
    )
    webhook_backoff_s: float = Field(
        default=0.5, gt=0, description="Wait before the first retry; doubled at each retry."
    )
    webhook_backoff_max_s: float = Field(
        default=30.0, gt=0, description="Longest wait between two attempts."
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Deadline of one POST.")
    webhook_sweep_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="How often a replica takes over the deliveries of a replica that died.",
    )
    webhook_concurrency: int = Field(
        default=32, ge=1, description="Webhook POSTs a replica makes at once."
    )
    webhook_reconcile_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the webhook queue's bindings are reconciled with the active "
        "subscriptions (patterns none needs are unbound; also at start).",
    )
    webhook_binding_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="A binding ensured by a create or update this recently is never unbound "
        "(the create may still be in flight on another replica).",
    )
    http_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts and CIDRs that webhooks may reach although they are "
        "private, loopback or link-local (the http_request node's policy and variable).",
    )

    event_waits_queue: str = Field(
        default="log.event_waits",
        description="Durable queue of the node.waiting events that index wait_event nodes.",
    )

    _split_allow_hosts = field_validator("http_allow_hosts", mode="before")(split_csv)
