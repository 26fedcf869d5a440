"""What the tool and AI services offer, and webhook triggers."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, status
from heddle.v1 import ai_pb2, events_pb2, tool_pb2, workflow_pb2

from libs.common import jsonutil
from services.gateway.convert import model_out, tool_out
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Tenant,
    read_object,
)
from services.gateway.schemas import ModelList, ToolList, TriggerFired

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)


@router.get("/tools", tags=["catalog"], summary="Tools the tool service offers")
async def list_tools(clients: Clients, caller: Caller, guard: Guard) -> ToolList:
    guard.require(caller, "read_catalog")
    reply = await clients.call(clients.tool.ListTools, tool_pb2.ListToolsRequest())
    return ToolList(tools=[tool_out(tool) for tool in reply.tools])


@router.get("/ai/models", tags=["catalog"], summary="Models the AI service offers")
async def list_models(clients: Clients, caller: Caller, guard: Guard) -> ModelList:
    guard.require(caller, "read_catalog")
    reply = await clients.call(clients.ai.ListModels, ai_pb2.ListModelsRequest())
    return ModelList(models=[model_out(model) for model in reply.models])


@router.post(
    "/triggers/{name}",
    tags=["triggers"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Webhook: start the workflows bound to this trigger, the body as their inputs",
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}
    },
)
async def fire_trigger(
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
    name: Annotated[str, Path(pattern=r"^[A-Za-z0-9._\-]{1,128}$")],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=256)] = None,
) -> TriggerFired:
    guard.require(caller, "fire_trigger")
    inputs = await read_object(request, "The inputs", required=False)
    source = f"webhook:{name}"
    # Namespaced by trigger: the same client key sent to two triggers means two fires. A long
    # key goes as its digest, so the execution's idempotency key (this, plus the workflow id)
    # fits its column.
    key = idempotency_key or uuid.uuid4().hex
    if len(key) > 64:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    dedupe_key = f"{source}:{key}"
    reply = await clients.call(
        clients.workflow.FireTrigger,
        workflow_pb2.FireTriggerRequest(
            fire=events_pb2.TriggerFire(
                dedupe_key=dedupe_key,
                source=source,
                inputs_json=jsonutil.dumps(inputs),
                tenant_id=tenant,
            )
        ),
    )
    return TriggerFired(execution_ids=list(reply.execution_ids))
