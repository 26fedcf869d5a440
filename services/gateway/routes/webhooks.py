"""Outbound webhook subscriptions of a tenant (admins only) and their delivery logs.

The log service owns them and delivers them (services/log/subscriptions.py,
services/log/webhooks.py): these routes call its webhook RPCs, which bind the webhook queue
to what a subscription's events need before a create or update answers (the next matching
event is delivered). The URL is checked here with the http_request node's address policy
(HEDDLE_HTTP_ALLOW_HOSTS), and again before every delivery.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from heddle.v1 import log_pb2
from pydantic import BaseModel, Field

from libs.common.errors import InvalidArgument
from libs.common.netguard import ForbiddenAddressError, check_url_allowed_async
from libs.common.timeutil import field_datetime, from_timestamp
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Paging,
    checked_id,
)
from services.gateway.schemas import Page

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

EventPattern = Annotated[
    str,
    Field(
        pattern=r"^([a-z_]+|\*|#)(\.([a-z_]+|\*|#))*$",
        max_length=64,
        examples=["execution.failed", "node.waiting", "execution.*"],
    ),
]


class WebhookIn(BaseModel):
    url: str = Field(max_length=2000, description="http(s) URL the events are POSTed to.")
    events: list[EventPattern] = Field(
        min_length=1,
        max_length=50,
        description="Event types to deliver; `*` is one word, `#` any: execution.failed, "
        "node.waiting, execution.*.",
    )
    workflow_id: str | None = Field(
        default=None, description="Only this workflow's events; none: every workflow."
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="HMAC-SHA256 key of the X-Heddle-Signature header; generated if absent "
        "(and then returned once).",
    )
    description: str = Field(default="", max_length=500)
    active: bool = True


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    workflow_id: str | None
    description: str
    active: bool
    created_at: dt.datetime
    updated_at: dt.datetime | None


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret, shown this once.")


class DeliveryOut(BaseModel):
    id: str
    event_id: str = Field(description="<execution_id>:<seq>; the Idempotency-Key header.")
    event_type: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    last_status_code: int | None
    last_error: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None


def _out(webhook: log_pb2.Webhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        url=webhook.url,
        events=list(webhook.events),
        workflow_id=webhook.workflow_id if webhook.HasField("workflow_id") else None,
        description=webhook.description,
        active=webhook.active,
        created_at=from_timestamp(webhook.created_at),
        updated_at=field_datetime(webhook, "updated_at"),
    )


def _spec(body: WebhookIn) -> log_pb2.WebhookSpec:
    spec = log_pb2.WebhookSpec(
        url=body.url,
        events=body.events,
        secret=body.secret or "",
        description=body.description,
        active=body.active,
    )
    if body.workflow_id is not None:
        spec.workflow_id = body.workflow_id
    return spec


async def _check_url(url: str, allow: list[str]) -> None:
    try:
        await check_url_allowed_async(url, allow)
    except ForbiddenAddressError as exc:
        raise InvalidArgument(str(exc), [{"field": "url"}]) from None
    except (OSError, UnicodeError, ValueError) as exc:  # no such host, an unencodable name
        raise InvalidArgument(f"cannot resolve the URL's host: {exc}", [{"field": "url"}]) from None


def _ref(caller: Caller, webhook_id: str) -> log_pb2.WebhookRef:
    return log_pb2.WebhookRef(tenant_id=caller.tenant_id, id=checked_id(webhook_id, "webhook"))


@router.post(
    "/webhooks",
    tags=["webhooks"],
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe a URL to events (signed POSTs, retried; the secret is shown this once)",
)
async def create_webhook(
    body: WebhookIn,
    request: Request,
    response: Response,
    caller: Caller,
    guard: Guard,
    clients: Clients,
) -> WebhookCreated:
    guard.require(caller, "manage_webhooks")
    await _check_url(body.url, guard.settings.http_allow_hosts)
    reply = await clients.call(
        clients.log.CreateWebhook,
        log_pb2.CreateWebhookRequest(tenant_id=caller.tenant_id, spec=_spec(body)),
    )
    webhook_id = reply.webhook.id
    request.state.audit_object_id = webhook_id
    response.headers["Location"] = f"/api/v1/webhooks/{webhook_id}"
    return WebhookCreated(**_out(reply.webhook).model_dump(), secret=reply.secret)


@router.get("/webhooks", tags=["webhooks"], summary="The tenant's webhook subscriptions")
async def list_webhooks(
    caller: Caller, guard: Guard, clients: Clients, paging: Paging
) -> Page[WebhookOut]:
    guard.require(caller, "manage_webhooks")
    reply = await clients.call(
        clients.log.ListWebhooks,
        log_pb2.ListWebhooksRequest(
            tenant_id=caller.tenant_id, page=paging.page, page_size=paging.page_size
        ),
    )
    return Page[WebhookOut](
        items=[_out(webhook) for webhook in reply.webhooks],
        page=paging.page,
        page_size=paging.page_size,
        total=reply.total,
    )


@router.get("/webhooks/{webhook_id}", tags=["webhooks"], summary="One webhook subscription")
async def get_webhook(
    webhook_id: str, caller: Caller, guard: Guard, clients: Clients
) -> WebhookOut:
    guard.require(caller, "manage_webhooks")
    return _out(await clients.call(clients.log.GetWebhook, _ref(caller, webhook_id)))


@router.put(
    "/webhooks/{webhook_id}",
    tags=["webhooks"],
    summary="Replace a subscription (its secret too when one is given)",
)
async def replace_webhook(
    webhook_id: str,
    body: WebhookIn,
    request: Request,
    caller: Caller,
    guard: Guard,
    clients: Clients,
) -> WebhookOut:
    guard.require(caller, "manage_webhooks")
    ref = _ref(caller, webhook_id)
    # Another tenant's or an unknown subscription is a 404 before the URL is looked at.
    await clients.call(clients.log.GetWebhook, ref)
    await _check_url(body.url, guard.settings.http_allow_hosts)
    reply = await clients.call(
        clients.log.UpdateWebhook,
        log_pb2.UpdateWebhookRequest(tenant_id=caller.tenant_id, id=ref.id, spec=_spec(body)),
    )
    request.state.audit_object_id = webhook_id
    return _out(reply)


@router.delete(
    "/webhooks/{webhook_id}",
    tags=["webhooks"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a subscription and its delivery log",
)
async def delete_webhook(
    webhook_id: str, request: Request, caller: Caller, guard: Guard, clients: Clients
) -> None:
    guard.require(caller, "manage_webhooks")
    await clients.call(clients.log.DeleteWebhook, _ref(caller, webhook_id))
    request.state.audit_object_id = webhook_id


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    tags=["webhooks"],
    summary="Delivery log of a subscription, newest first (dead: retries exhausted)",
)
async def list_deliveries(
    webhook_id: str,
    caller: Caller,
    guard: Guard,
    clients: Clients,
    paging: Paging,
    status_filter: Annotated[
        Literal["pending", "delivered", "dead"] | None,
        Query(alias="status", description="Only deliveries in this state."),
    ] = None,
) -> Page[DeliveryOut]:
    guard.require(caller, "manage_webhooks")
    reply = await clients.call(
        clients.log.ListWebhookDeliveries,
        log_pb2.ListWebhookDeliveriesRequest(
            tenant_id=caller.tenant_id,
            webhook_id=checked_id(webhook_id, "webhook"),
            status=status_filter or "",
            page=paging.page,
            page_size=paging.page_size,
        ),
    )
    items = [
        DeliveryOut(
            id=delivery.id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code
            if delivery.HasField("last_status_code")
            else None,
            last_error=delivery.last_error,
            created_at=from_timestamp(delivery.created_at),
            delivered_at=field_datetime(delivery, "delivered_at"),
        )
        for delivery in reply.deliveries
    ]
    return Page[DeliveryOut](
        items=items, page=paging.page, page_size=paging.page_size, total=reply.total
    )
