"""Credentials and secrets of a tenant (API keys, secrets), and its audit trail: admins only."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from heddle.v1 import workflow_pb2

from libs.common.db import utcnow
from libs.common.errors import FailedPrecondition, InvalidArgument
from services.gateway.convert import api_key_out, audit_out, secret_out
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Paging,
    checked_id,
)
from services.gateway.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    AuditRecordOut,
    Page,
    SecretIn,
    SecretList,
    SecretOut,
)

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

SecretName = Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


# ---- API keys -----------------------------------------------------------------------------


@router.get("/api-keys", tags=["api-keys"], summary="The tenant's API keys (never the keys)")
async def list_api_keys(caller: Caller, guard: Guard, paging: Paging) -> Page[ApiKeyOut]:
    guard.require(caller, "manage_api_keys")
    _require_auth(guard.enabled)
    rows, total = await guard.list_api_keys(caller.tenant_id, paging.page, paging.page_size)
    return Page[ApiKeyOut](
        items=[api_key_out(row) for row in rows],
        page=paging.page,
        page_size=paging.page_size,
        total=total,
    )


@router.post(
    "/api-keys",
    tags=["api-keys"],
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key: the response holds the key, shown this once",
)
async def create_api_key(
    body: ApiKeyIn, request: Request, response: Response, caller: Caller, guard: Guard
) -> ApiKeyCreated:
    guard.require(caller, "manage_api_keys")
    _require_auth(guard.enabled)
    max_days = guard.settings.api_key_max_ttl_days
    days = body.expires_in_days
    if max_days and (days is None or days > max_days):
        raise InvalidArgument(
            f"expires_in_days is required and at most {max_days}",
            [{"field": "expires_in_days"}],
        )
    expires_at = utcnow() + dt.timedelta(days=days) if days else None
    row, token = await guard.create_api_key(
        tenant_id=caller.tenant_id,
        name=body.name,
        scopes=body.scopes,
        expires_at=expires_at,
        created_by=caller.id,
    )
    request.state.audit_object_id = row.id
    response.headers["Location"] = f"/api/v1/api-keys/{row.id}"
    return ApiKeyCreated(**api_key_out(row).model_dump(), key=token)


@router.delete(
    "/api-keys/{key_id}",
    tags=["api-keys"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke an API key (at once, for every gateway replica)",
)
async def revoke_api_key(key_id: str, caller: Caller, guard: Guard) -> None:
    guard.require(caller, "manage_api_keys")
    _require_auth(guard.enabled)
    await guard.revoke_api_key(caller.tenant_id, checked_id(key_id, "API key"))


def _require_auth(enabled: bool) -> None:
    if not enabled:
        raise FailedPrecondition("authentication is disabled (HEDDLE_AUTH_ENABLED=false)")


# ---- secrets ------------------------------------------------------------------------------


@router.get("/secrets", tags=["secrets"], summary="Names of the tenant's secrets (never values)")
async def list_secrets(clients: Clients, caller: Caller, guard: Guard) -> SecretList:
    guard.require(caller, "manage_secrets")
    reply = await clients.call(
        clients.workflow.ListSecrets, workflow_pb2.ListSecretsRequest(tenant_id=caller.tenant_id)
    )
    return SecretList(secrets=[secret_out(secret) for secret in reply.secrets])


@router.post(
    "/secrets",
    tags=["secrets"],
    status_code=status.HTTP_201_CREATED,
    summary="Create or replace a secret; workflows read it as {{ secrets.NAME }}",
)
async def put_secret(
    body: SecretIn, request: Request, clients: Clients, caller: Caller, guard: Guard
) -> SecretOut:
    guard.require(caller, "manage_secrets")
    reply = await clients.call(
        clients.workflow.PutSecret,
        workflow_pb2.PutSecretRequest(tenant_id=caller.tenant_id, name=body.name, value=body.value),
    )
    request.state.audit_object_id = body.name
    return secret_out(reply.secret)


@router.delete(
    "/secrets/{name}",
    tags=["secrets"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a secret",
)
async def delete_secret(name: SecretName, clients: Clients, caller: Caller, guard: Guard) -> None:
    guard.require(caller, "manage_secrets")
    await clients.call(
        clients.workflow.DeleteSecret,
        workflow_pb2.DeleteSecretRequest(tenant_id=caller.tenant_id, name=name),
    )


# ---- audit --------------------------------------------------------------------------------


@router.get("/audit", tags=["audit"], summary="Who did what, newest first (tenant admins)")
async def list_audit(
    caller: Caller,
    guard: Guard,
    paging: Paging,
    action: Annotated[str | None, Query(max_length=40)] = None,
    object_type: Annotated[str | None, Query(max_length=40)] = None,
    object_id: Annotated[str | None, Query(max_length=300)] = None,
    principal: Annotated[str | None, Query(max_length=300)] = None,
) -> Page[AuditRecordOut]:
    guard.require(caller, "read_audit")
    if not guard.enabled:
        return Page[AuditRecordOut](items=[], page=paging.page, page_size=paging.page_size, total=0)
    rows, total = await guard.audit_page(
        caller.tenant_id,
        paging.page,
        paging.page_size,
        action=action,
        object_type=object_type,
        object_id=object_id,
        principal=principal,
    )
    return Page[AuditRecordOut](
        items=[audit_out(row) for row in rows],
        page=paging.page,
        page_size=paging.page_size,
        total=total,
    )
