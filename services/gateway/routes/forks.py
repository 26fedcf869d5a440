"""Fork (time travel): re-run an execution from one of its completed nodes, optionally with
that node's output edited, as a new execution linked to the old one (`forked_from`). Every
completed node that is not from_node or downstream of it is reused as it is (no attempt); the
from_node takes the edited output when one is given (else it runs again); downstream runs."""

from __future__ import annotations

from typing import Annotated, Any

import jsonschema
from fastapi import APIRouter, Query, Request, Response, status
from heddle.v1 import common_pb2, node_pb2, workflow_pb2
from pydantic import BaseModel, Field

from libs.common import jsonutil
from libs.common.errors import FailedPrecondition, InvalidArgument
from services.gateway.convert import execution_out
from services.gateway.forking import fork_trigger, forks_prefix
from services.gateway.routes.common import ERROR_RESPONSES, Caller, Clients, Guard, checked_id
from services.gateway.routes.executions import _authorized
from services.gateway.schemas import INT32_MAX, ExecutionOut

router = APIRouter(prefix="/api/v1", tags=["executions"], responses=ERROR_RESPONSES)

_COMPLETED = ("succeeded", "cached")


class ForkRequest(BaseModel):
    from_node: str = Field(min_length=1, max_length=64, description="A completed node.")
    output: Any = Field(
        default=None,
        description="The from_node's output in the fork; absent: the from_node runs again.",
    )


class ForkStarted(BaseModel):
    execution_id: str
    status: str
    forked_from: dict[str, str]
    reused: list[str] = Field(description="The nodes reused as they were (no attempt).")


async def check_output(clients: Clients, tenant: str, node_type: str, output: Any) -> None:
    """An edited output must satisfy its node type's output schema (located 422 if not)."""
    reply = await clients.call(
        clients.workflow.ListNodeTypes, node_pb2.ListNodeTypesRequest(tenant_id=tenant)
    )
    schema: dict[str, Any] = {}
    for spec in jsonutil.loads(reply.node_types_json) or []:
        if spec.get("type") == node_type:
            schema = spec.get("output_schema") or {}
    problems = [
        {
            "field": "output" + "".join(f".{part}" for part in error.absolute_path),
            "message": error.message,
        }
        for error in jsonschema.Draft202012Validator(schema).iter_errors(output)
    ]
    if problems:
        raise InvalidArgument(f"output breaks the output schema of {node_type!r}", problems)


def downstream(definition: dict[str, Any], node_id: str) -> set[str]:
    """node_id and every node reachable from it along the definition's edges."""
    targets: dict[str, list[str]] = {}
    for edge in definition.get("edges") or []:
        targets.setdefault(str(edge.get("source")), []).append(str(edge.get("target")))
    seen, todo = {node_id}, [node_id]
    while todo:
        for target in targets.get(todo.pop(), []):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@router.post(
    "/executions/{execution_id}/fork",
    status_code=status.HTTP_201_CREATED,
    summary="Re-run an execution from a completed node (its output optionally edited)",
)
async def fork_execution(
    execution_id: str,
    body: ForkRequest,
    request: Request,
    response: Response,
    clients: Clients,
    caller: Caller,
    guard: Guard,
) -> ForkStarted:
    execution_id = checked_id(execution_id, "execution")
    old = await _authorized(clients, guard, caller, execution_id, "execute")
    where = [{"field": "from_node", "message": body.from_node}]
    nodes = {node.node_id: node for node in old.nodes}
    node = nodes.get(body.from_node)
    if node is None:
        raise InvalidArgument(f"execution {execution_id!r} has no node {body.from_node!r}", where)
    if node.status not in _COMPLETED:
        raise FailedPrecondition(
            f"node {body.from_node!r} of execution {execution_id!r} is {node.status}; "
            "only a completed node can be forked from",
            where,
        )
    workflow = await clients.call(
        clients.workflow.GetWorkflow,
        workflow_pb2.GetWorkflowRequest(
            id=old.workflow_id, version=old.workflow_version, tenant_id=caller.tenant_id
        ),
    )
    definition = jsonutil.loads(workflow.definition_json) if workflow.definition_json else {}
    rerun = downstream(definition, body.from_node)
    reuse: dict[str, dict[str, Any]] = {
        run.node_id: {"status": run.status, "output": run.output, "attempt": 1}
        for run in old.nodes
        if run.status in _COMPLETED and run.node_id not in rerun
    }
    if "output" in body.model_fields_set:
        await check_output(clients, caller.tenant_id, node.type, body.output)
        reuse[body.from_node] = {"status": "succeeded", "output": body.output, "attempt": 1}
    reply = await clients.call(
        clients.workflow.StartExecution,
        workflow_pb2.StartExecutionRequest(
            workflow_id=old.workflow_id,
            version=old.workflow_version,
            inputs_json=jsonutil.dumps(old.inputs),
            reuse_json=jsonutil.dumps(reuse),
            tenant_id=caller.tenant_id,
            trigger=fork_trigger(execution_id, body.from_node),
            priority=old.priority,
        ),
    )
    request.state.audit_object_id = reply.execution_id
    response.headers["Location"] = f"/api/v1/executions/{reply.execution_id}"
    return ForkStarted(
        execution_id=reply.execution_id,
        status=reply.status,
        forked_from={"execution_id": execution_id, "node_id": body.from_node},
        reused=sorted(reuse),
    )


class ForksOut(BaseModel):
    items: list[ExecutionOut] = Field(description="The forks, newest first (no node records).")
    total: int


@router.get("/executions/{execution_id}/forks", summary="The executions forked from this one")
async def list_forks(
    execution_id: str,
    clients: Clients,
    caller: Caller,
    guard: Guard,
    page: Annotated[int, Query(ge=1, le=INT32_MAX)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ForksOut:
    execution_id = checked_id(execution_id, "execution")
    old = await _authorized(clients, guard, caller, execution_id, "read", summary=True)
    reply = await clients.call(
        clients.workflow.ListExecutions,
        workflow_pb2.ListExecutionsRequest(
            page=common_pb2.PageRequest(page=page, page_size=page_size),
            workflow_id=old.workflow_id,
            tenant_id=caller.tenant_id,
            trigger_prefix=forks_prefix(execution_id),
        ),
    )
    return ForksOut(
        items=[execution_out(item) for item in reply.executions], total=reply.page.total
    )
