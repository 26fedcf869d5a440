"""Settings of the HTTP gateway, read from `HEDDLE_*` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from libs.common.settings import CommonSettings, _split

Dependency = Literal["workflow", "node", "ai", "tool", "scheduler", "log"]
DEPENDENCIES: tuple[Dependency, ...] = ("workflow", "node", "ai", "tool", "scheduler", "log")


class GatewaySettings(CommonSettings):
    """Options of the gateway (on top of the shared ones: service addresses, deadlines...)."""

    http_host: str = Field(default="127.0.0.1", description="Host the HTTP server binds to.")
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="HTTP port; 0 picks a free one."
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above)."
    )
    default_page_size: int = Field(
        default=50, gt=0, description="page_size of list routes when the client gives none."
    )
    max_page_size: int = Field(
        default=200, gt=0, description="Largest page_size a list route accepts (422 above)."
    )
    sse_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Seconds between `: ping` comments on an idle SSE stream."
    )
    event_stream_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="Deadline of one event-stream gRPC call; a client resumes with "
        "Last-Event-ID (SSE) or ?after= (WebSocket) when it ends.",
    )
    readiness_timeout_s: float = Field(
        default=1.0, gt=0, description="Deadline of each dependency's gRPC health check."
    )
    ready_required: Annotated[list[Dependency], NoDecode] = Field(
        default=list(DEPENDENCIES),
        description="Comma-separated dependencies whose outage makes /readyz answer 503 "
        "(the others are reported only). Default: all, so that 200 means the stack is up.",
    )
    shutdown_grace_s: int = Field(
        default=5, ge=0, description="Seconds open connections get to finish on shutdown."
    )

    _split_ready_required = field_validator("ready_required", mode="before")(_split)
