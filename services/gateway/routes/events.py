"""POST /api/v1/events: an event from the outside world that wait_event nodes wait for."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status
from heddle.v1 import log_pb2
from pydantic import BaseModel, Field

from libs.common import jsonutil
from libs.common.timeutil import field_datetime
from services.gateway.routes.common import ERROR_RESPONSES, Caller, Clients, Guard

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)


class EventIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["payment.received"])
    correlation_key: str = Field(default="", max_length=500, examples=["order-42"])
    data: Any = Field(default=None, description="Becomes the output of the nodes it resumes.")
    keep_s: float | None = Field(
        default=None,
        gt=0,
        description="How long an event that no node waits for yet is kept for one that starts "
        "waiting later (default and maximum: HEDDLE_EVENT_KEEP_S).",
    )


class Resumed(BaseModel):
    execution_id: str
    node_id: str


class EventAccepted(BaseModel):
    id: str
    resumed: list[Resumed] = Field(description="The waiting nodes this event resumed.")
    kept_until: dt.datetime | None = Field(
        description="Set when no node was waiting: the event waits for one until then."
    )


@router.post(
    "/events",
    tags=["events"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send an event: resumes the wait_event nodes waiting for its name and key, or is "
    "kept for one that starts waiting soon",
)
async def send_event(
    body: EventIn,
    request: Request,
    response: Response,
    clients: Clients,
    caller: Caller,
    guard: Guard,
) -> EventAccepted:
    guard.require(caller, "send_event")
    keep_s = min(body.keep_s or guard.settings.event_keep_s, guard.settings.event_keep_s)

    event_id = str(uuid.uuid4())
    # The log service owns the events and the waiters (services/log/event_waits.py); its
    # database down is a 503 with Retry-After, as any dependency's.
    reply = await clients.call(
        clients.log.SendEvent,
        log_pb2.SendEventRequest(
            tenant_id=caller.tenant_id,
            event_id=event_id,
            name=body.name,
            correlation_key=body.correlation_key,
            data_json=jsonutil.dumps(body.data),
            keep_s=keep_s,
        ),
    )
    request.state.audit_object_id = event_id
    return EventAccepted(
        id=event_id,
        resumed=[
            Resumed(execution_id=item.execution_id, node_id=item.node_id) for item in reply.resumed
        ],
        kept_until=field_datetime(reply, "kept_until"),
    )
