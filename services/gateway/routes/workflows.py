"""Workflow definitions: validate, create, list, read, new version, delete, execute."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from heddle.v1 import node_pb2, workflow_pb2

from libs.common import jsonutil
from services.gateway.convert import paginate, validation_report, workflow_out
from services.gateway.routes.common import (
    DEFINITION_BODY,
    ERROR_RESPONSES,
    Clients,
    Paging,
    Tenant,
    checked_id,
    read_definition,
)
from services.gateway.schemas import (
    ExecuteRequest,
    ExecutionStarted,
    NodeTypeList,
    Page,
    ValidationReport,
    WorkflowOut,
)

router = APIRouter(prefix="/api/v1", tags=["workflows"], responses=ERROR_RESPONSES)


@router.get(
    "/node-types",
    tags=["catalog"],
    response_model=NodeTypeList,
    summary="Node types with their input, output and param schemas",
)
async def list_node_types(clients: Clients) -> Response:
    reply = await clients.call(clients.workflow.ListNodeTypes, node_pb2.ListNodeTypesRequest())
    # Already JSON from the node registry: pass it through rather than re-encode it.
    node_types = jsonutil.loads(reply.node_types_json) or []
    return Response(jsonutil.dumps({"node_types": node_types}), media_type="application/json")


@router.post(
    "/workflows/validate",
    summary="Validate a definition without saving it",
    openapi_extra=DEFINITION_BODY,
)
async def validate_workflow(request: Request, clients: Clients, tenant: Tenant) -> ValidationReport:
    definition = await read_definition(request)
    reply = await clients.call(
        clients.workflow.ValidateWorkflow,
        workflow_pb2.ValidateWorkflowRequest(definition_json=definition, tenant_id=tenant),
    )
    return validation_report(reply)


@router.get("/workflows", summary="List workflows (latest versions, without definitions)")
async def list_workflows(clients: Clients, tenant: Tenant, paging: Paging) -> Page[WorkflowOut]:
    reply = await clients.call(
        clients.workflow.ListWorkflows,
        workflow_pb2.ListWorkflowsRequest(page=paging.proto(), tenant_id=tenant),
    )
    return paginate([workflow_out(w) for w in reply.workflows], reply.page)


@router.post(
    "/workflows",
    status_code=status.HTTP_201_CREATED,
    summary="Create a workflow (version 1)",
    openapi_extra=DEFINITION_BODY,
)
async def create_workflow(request: Request, clients: Clients, tenant: Tenant) -> WorkflowOut:
    definition = await read_definition(request)
    reply = await clients.call(
        clients.workflow.CreateWorkflow,
        workflow_pb2.CreateWorkflowRequest(definition_json=definition, tenant_id=tenant),
    )
    return workflow_out(reply)


@router.get("/workflows/{workflow_id}", summary="Read a workflow (latest or ?version=N)")
async def get_workflow(
    workflow_id: str,
    clients: Clients,
    tenant: Tenant,
    version: Annotated[
        int | None, Query(ge=1, description="A past version; latest if unset.")
    ] = None,
) -> WorkflowOut:
    reply = await clients.call(
        clients.workflow.GetWorkflow,
        workflow_pb2.GetWorkflowRequest(
            id=checked_id(workflow_id, "workflow"), version=version or 0, tenant_id=tenant
        ),
    )
    return workflow_out(reply)


@router.put(
    "/workflows/{workflow_id}",
    summary="Save a new version of a workflow",
    openapi_extra=DEFINITION_BODY,
)
async def update_workflow(
    workflow_id: str, request: Request, clients: Clients, tenant: Tenant
) -> WorkflowOut:
    workflow_id = checked_id(workflow_id, "workflow")
    definition = await read_definition(request)
    reply = await clients.call(
        clients.workflow.UpdateWorkflow,
        workflow_pb2.UpdateWorkflowRequest(
            id=workflow_id, definition_json=definition, tenant_id=tenant
        ),
    )
    return workflow_out(reply)


@router.delete(
    "/workflows/{workflow_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a workflow and its versions",
)
async def delete_workflow(workflow_id: str, clients: Clients, tenant: Tenant) -> None:
    await clients.call(
        clients.workflow.DeleteWorkflow,
        workflow_pb2.DeleteWorkflowRequest(
            id=checked_id(workflow_id, "workflow"), tenant_id=tenant
        ),
    )


@router.post(
    "/workflows/{workflow_id}/execute",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["executions"],
    summary="Start an execution",
)
async def execute_workflow(
    workflow_id: str,
    response: Response,
    clients: Clients,
    tenant: Tenant,
    body: Annotated[ExecuteRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=256)] = None,
) -> ExecutionStarted:
    body = body or ExecuteRequest()
    reply = await clients.call(
        clients.workflow.StartExecution,
        workflow_pb2.StartExecutionRequest(
            workflow_id=checked_id(workflow_id, "workflow"),
            version=body.version or 0,
            inputs_json=jsonutil.dumps(body.inputs),
            idempotency_key=body.idempotency_key or idempotency_key or "",
            tenant_id=tenant,
            trigger="api",
        ),
    )
    response.headers["Location"] = f"/api/v1/executions/{reply.execution_id}"
    return ExecutionStarted(
        execution_id=reply.execution_id, status=reply.status, created=reply.created
    )
