"""Outbound webhook subscriptions of a tenant (admins only) and their delivery logs.

The rows live in the shared database beside the log service's tables, which delivers them
(services/log/webhooks.py); the gateway writes them as it writes its own API keys. The URL
is checked here with the http_request node's address policy (HEDDLE_HTTP_ALLOW_HOSTS), and
again before every delivery.
"""

from __future__ import annotations

import datetime as dt
import secrets as token_source
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select

from libs.common.db import utcnow
from libs.common.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.common.netguard import ForbiddenAddressError, check_url_allowed_async
from libs.common.secrets import SecretBox
from services.gateway.routes.common import ERROR_RESPONSES, Caller, Guard, Paging, checked_id
from services.gateway.schemas import Page
from services.log.models import WebhookDeliveryRow, WebhookRow
from services.log.webhooks import secret_name

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


def _out(row: WebhookRow) -> WebhookOut:
    return WebhookOut(
        id=row.id,
        url=row.url,
        events=list(row.events or []),
        workflow_id=row.workflow_id,
        description=row.description,
        active=row.active,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _box(guard: Guard) -> SecretBox:
    key = guard.settings.secrets_key
    if not key:
        raise FailedPrecondition("webhooks need HEDDLE_SECRETS_KEY (their secrets are sealed)")
    return SecretBox(key)


async def _check_url(url: str, allow: list[str]) -> None:
    try:
        await check_url_allowed_async(url, allow)
    except ForbiddenAddressError as exc:
        raise InvalidArgument(str(exc), [{"field": "url"}]) from None
    except (OSError, UnicodeError, ValueError) as exc:  # no such host, an unencodable name
        raise InvalidArgument(f"cannot resolve the URL's host: {exc}", [{"field": "url"}]) from None


async def _get(guard: Guard, tenant_id: str, webhook_id: str) -> WebhookRow:
    async with guard.db.session() as session:
        row = await session.get(WebhookRow, checked_id(webhook_id, "webhook"))
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"webhook '{webhook_id}' not found")
    return row


@router.post(
    "/webhooks",
    tags=["webhooks"],
    status_code=status.HTTP_201_CREATED,
    summary="Subscribe a URL to events (signed POSTs, retried; the secret is shown this once)",
)
async def create_webhook(
    body: WebhookIn, request: Request, response: Response, caller: Caller, guard: Guard
) -> WebhookCreated:
    guard.require(caller, "manage_webhooks")
    box = _box(guard)
    await _check_url(body.url, guard.settings.http_allow_hosts)
    webhook_id = str(uuid.uuid4())
    secret = body.secret or token_source.token_urlsafe(32)
    row = WebhookRow(
        id=webhook_id,
        tenant_id=caller.tenant_id,
        url=body.url,
        events=list(dict.fromkeys(body.events)),
        workflow_id=body.workflow_id,
        secret_ciphertext=box.encrypt(caller.tenant_id, secret_name(webhook_id), secret),
        description=body.description,
        active=body.active,
        created_at=utcnow(),
    )
    async with guard.db.transaction() as session:
        session.add(row)
    request.state.audit_object_id = webhook_id
    response.headers["Location"] = f"/api/v1/webhooks/{webhook_id}"
    return WebhookCreated(**_out(row).model_dump(), secret=secret)


@router.get("/webhooks", tags=["webhooks"], summary="The tenant's webhook subscriptions")
async def list_webhooks(caller: Caller, guard: Guard, paging: Paging) -> Page[WebhookOut]:
    guard.require(caller, "manage_webhooks")
    where = WebhookRow.tenant_id == caller.tenant_id
    async with guard.db.session() as session:
        total = await session.scalar(select(func.count()).select_from(WebhookRow).where(where))
        rows = (
            await session.execute(
                select(WebhookRow)
                .where(where)
                .order_by(WebhookRow.created_at, WebhookRow.id)
                .offset((paging.page - 1) * paging.page_size)
                .limit(paging.page_size)
            )
        ).scalars()
        items = [_out(row) for row in rows]
    return Page[WebhookOut](
        items=items, page=paging.page, page_size=paging.page_size, total=total or 0
    )


@router.get("/webhooks/{webhook_id}", tags=["webhooks"], summary="One webhook subscription")
async def get_webhook(webhook_id: str, caller: Caller, guard: Guard) -> WebhookOut:
    guard.require(caller, "manage_webhooks")
    return _out(await _get(guard, caller.tenant_id, webhook_id))


@router.put(
    "/webhooks/{webhook_id}",
    tags=["webhooks"],
    summary="Replace a subscription (its secret too when one is given)",
)
async def replace_webhook(
    webhook_id: str, body: WebhookIn, request: Request, caller: Caller, guard: Guard
) -> WebhookOut:
    guard.require(caller, "manage_webhooks")
    box = _box(guard)
    await _get(guard, caller.tenant_id, webhook_id)
    await _check_url(body.url, guard.settings.http_allow_hosts)
    async with guard.db.transaction() as session:
        row = await session.get(WebhookRow, webhook_id)
        if row is None:
            raise NotFound(f"webhook '{webhook_id}' not found")
        row.url = body.url
        row.events = list(dict.fromkeys(body.events))
        row.workflow_id = body.workflow_id
        row.description = body.description
        row.active = body.active
        if body.secret:
            row.secret_ciphertext = box.encrypt(
                caller.tenant_id, secret_name(webhook_id), body.secret
            )
        row.updated_at = utcnow()
    request.state.audit_object_id = webhook_id
    return _out(row)


@router.delete(
    "/webhooks/{webhook_id}",
    tags=["webhooks"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a subscription and its delivery log",
)
async def delete_webhook(webhook_id: str, request: Request, caller: Caller, guard: Guard) -> None:
    guard.require(caller, "manage_webhooks")
    await _get(guard, caller.tenant_id, webhook_id)
    async with guard.db.transaction() as session:
        await session.execute(
            delete(WebhookDeliveryRow).where(WebhookDeliveryRow.subscription_id == webhook_id)
        )
        await session.execute(delete(WebhookRow).where(WebhookRow.id == webhook_id))
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
    paging: Paging,
    status_filter: Annotated[
        Literal["pending", "delivered", "dead"] | None,
        Query(alias="status", description="Only deliveries in this state."),
    ] = None,
) -> Page[DeliveryOut]:
    guard.require(caller, "manage_webhooks")
    await _get(guard, caller.tenant_id, webhook_id)
    conditions = [WebhookDeliveryRow.subscription_id == webhook_id]
    if status_filter is not None:
        conditions.append(WebhookDeliveryRow.status == status_filter)
    async with guard.db.session() as session:
        total = await session.scalar(
            select(func.count()).select_from(WebhookDeliveryRow).where(*conditions)
        )
        rows = (
            await session.execute(
                select(WebhookDeliveryRow)
                .where(*conditions)
                .order_by(WebhookDeliveryRow.created_at.desc(), WebhookDeliveryRow.id)
                .offset((paging.page - 1) * paging.page_size)
                .limit(paging.page_size)
            )
        ).scalars()
        items = [
            DeliveryOut(
                id=row.id,
                event_id=row.event_id,
                event_type=row.event_type,
                status=row.status,  # type: ignore[arg-type]
                attempts=row.attempts,
                last_status_code=row.last_status_code,
                last_error=row.last_error,
                created_at=row.created_at,
                delivered_at=row.delivered_at,
            )
            for row in rows
        ]
    return Page[DeliveryOut](
        items=items, page=paging.page, page_size=paging.page_size, total=total or 0
    )
