"""The result cache: invalidate a workflow's (or one node's) cached node results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from heddle.v1 import workflow_pb2
from pydantic import BaseModel, Field

from libs.common.cache import create_result_cache
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Tenant,
    checked_id,
    get_settings,
)

router = APIRouter(prefix="/api/v1", tags=["cache"], responses=ERROR_RESPONSES)


class CacheInvalidated(BaseModel):
    workflow_id: str
    node_id: str | None = Field(description="The node whose entries went; null: every node.")
    removed: int = Field(
        description="Entries removed from the shared tier (and this gateway's); every "
        "workflow replica stops serving the scope's entries from its own memory at once."
    )


@router.delete(
    "/cache",
    summary="Invalidate cached node results of a workflow (one node, or all of its nodes)",
)
async def invalidate_cache(
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
    workflow_id: Annotated[str, Query(description="The workflow whose cache entries go.")],
    node_id: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Only this node's entries.")
    ] = None,
) -> CacheInvalidated:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "update")
    # 404 for a workflow of another tenant (an admin passes the role check).
    await clients.call(
        clients.workflow.GetWorkflow,
        workflow_pb2.GetWorkflowRequest(id=workflow_id, tenant_id=tenant),
    )
    # The generations live in the main store (guard.kv, HEDDLE_REDIS_URL); a store of the
    # cache's own (HEDDLE_CACHE_URL) is opened for this rare call and closed after it.
    cache, opened = create_result_cache(get_settings(request), guard.kv)
    try:
        removed = await cache.invalidate(workflow_id, node_id)
    finally:
        if opened is not None:
            await opened.close()
    request.state.audit_object_id = workflow_id if node_id is None else f"{workflow_id}/{node_id}"
    return CacheInvalidated(workflow_id=workflow_id, node_id=node_id, removed=removed)
