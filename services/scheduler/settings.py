"""Settings of the scheduler service."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from libs.common.settings import CommonSettings


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class SchedulerSettings(CommonSettings):
    """Options of the scheduler service (HEDDLE_ prefix)."""

    tick_s: float = Field(
        default=1.0, gt=0, description="How often the leader looks for due schedules."
    )
    leader_lease_s: float = Field(
        default=10.0,
        gt=0,
        description="TTL of the leadership lease; a standby takes over at most this long "
        "after the leader stops renewing it.",
    )
    leader_lease_name: str = Field(
        default="scheduler:leader", description="Key of the leadership lease in the KV store."
    )
    instance_id: str = Field(
        default_factory=_default_instance_id,
        description="Identity of this scheduler in the leadership lease; unique per process.",
    )
    misfire_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="A fire later than this is missed and handled by the misfire policy; a "
        "later one within it is just late and always fires.",
    )
    batch_size: int = Field(
        default=200, ge=1, description="Most due schedules handled in one tick."
    )
    default_page_size: int = Field(
        default=50, ge=1, le=1000, description="Page size of ListSchedules when unset."
    )
