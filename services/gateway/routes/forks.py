"""Fork (time travel): re-run an execution from one of its completed nodes, optionally with
that node's output edited, as a new execution linked to the old one (`forked_from`). Every
completed node that is not from_node or downstream of it is reused as it is (no attempt); the
from_node takes the edited output when one is given (else it runs again); downstream runs.

An agent node may be forked with one step of its journal edited instead (`step`, its position
in the node's journal, and `entry`, the fields that replace that entry's): the fork's agent
resumes from the journal up to that step with the edited entry (replayed, nothing paid or
called again), then continues live: an edited model reply or tool result goes to the model,
an edited tool_call's arguments are the ones the tool is called with."""

from __future__ import annotations

from typing import Annotated, Any

import jsonschema
from fastapi import APIRouter, Query, Request, Response, status
from heddle.v1 import common_pb2, node_pb2, workflow_pb2
from pydantic import BaseModel, Field

from libs.common import jsonutil
from libs.common.errors import FailedPrecondition, InvalidArgument
from services.gateway.convert import execution_out
from services.gateway.forking import TRIGGER
from services.gateway.routes.common import ERROR_RESPONSES, Caller, Clients, Guard, checked_id
from services.gateway.routes.executions import _authorized
from services.gateway.schemas import INT32_MAX, ExecutionOut, NodeRunOut

router = APIRouter(prefix="/api/v1", tags=["executions"], responses=ERROR_RESPONSES)

_COMPLETED = ("succeeded", "cached")


class ForkRequest(BaseModel):
    from_node: str = Field(min_length=1, max_length=64, description="A completed node.")
    output: Any = Field(
        default=None,
        description="The from_node's output in the fork; absent: the from_node runs again.",
    )
    step: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="An agent node: the position (from 0) of the journal entry to edit; the "
        "fork's agent replays the journal up to it, with `entry`, then runs on live.",
    )
    entry: dict[str, Any] | None = Field(
        default=None,
        description="With step: the fields replacing the journal entry's (a model_call's "
        "`reply`, a tool_call's `arguments`, a tool_result's `result`, a final's `text`).",
    )


class ForkStarted(BaseModel):
    execution_id: str
    status: str
    forked_from: dict[str, str]
    reused: list[str] = Field(description="The nodes reused as they were (no attempt).")


#: The fields of a journal entry that a fork may edit, by entry type, with their schemas.
_EDITABLE: dict[str, dict[str, Any]] = {
    "model_call": {
        "reply": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "tool_calls": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["text"],
        },
    },
    "tool_call": {"arguments": {"type": "object"}},
    "tool_result": {"result": {}},
    "final": {"text": {"type": "string"}},
}


def edited_journal(node: NodeRunOut, step: int, entry: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint a fork's agent node starts from: its journal up to `step`, that entry
    with `entry`'s fields (located 422s for anything the agent could not replay)."""
    checkpoint = node.checkpoint
    journal = checkpoint.get("journal") if isinstance(checkpoint, dict) else None
    if not isinstance(journal, list) or not journal:
        raise InvalidArgument(
            f"node {node.node_id!r} ({node.type}) has no agent journal: only an agent's "
            "steps can be edited (fork with output instead)",
            [{"field": "step", "message": "no agent journal"}],
        )
    if step >= len(journal):
        raise InvalidArgument(
            f"node {node.node_id!r} has {len(journal)} journal entries (0-{len(journal) - 1})",
            [{"field": "step", "message": f"{step} is out of range"}],
        )
    original = journal[step]
    kind = str(original.get("type"))
    editable = _EDITABLE.get(kind, {})
    problems: list[dict[str, str]] = []
    if not entry:
        problems.append({"field": "entry", "message": "no field to edit"})
    for name, value in entry.items():
        if name not in editable:
            allowed = ", ".join(sorted(editable)) or "none"
            problems.append(
                {
                    "field": f"entry.{name}",
                    "message": f"not editable in a {kind} (editable: {allowed})",
                }
            )
            continue
        problems.extend(
            {
                "field": f"entry.{name}" + "".join(f".{part}" for part in error.absolute_path),
                "message": error.message,
            }
            for error in jsonschema.Draft202012Validator(editable[name]).iter_errors(value)
        )
    if problems:
        raise InvalidArgument(f"entry cannot replace the {kind} at step {step}", problems)
    return {"journal": [*journal[:step], {**original, **entry, "edited": True}]}


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
    if body.step is not None or body.entry is not None:
        if "output" in body.model_fields_set:
            raise InvalidArgument(
                "fork with an edited output or an edited agent step, not both",
                [{"field": "output", "message": "not with step and entry"}],
            )
        if body.step is None or body.entry is None:
            missing = "step" if body.step is None else "entry"
            raise InvalidArgument(
                f"an agent step is edited with step and entry: {missing} is missing",
                [{"field": missing, "message": "missing"}],
            )
        checkpoint = edited_journal(node, body.step, body.entry)
        reuse[body.from_node] = {"status": "pending", "checkpoint": checkpoint}
    elif "output" in body.model_fields_set:
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
            trigger=TRIGGER,
            forked_from_execution_id=execution_id,
            forked_from_node=body.from_node,
            priority=old.priority,
        ),
    )
    request.state.audit_object_id = reply.execution_id
    response.headers["Location"] = f"/api/v1/executions/{reply.execution_id}"
    return ForkStarted(
        execution_id=reply.execution_id,
        status=reply.status,
        forked_from={"execution_id": execution_id, "node_id": body.from_node},
        reused=sorted(k for k, v in reuse.items() if v["status"] != "pending"),
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
            forked_from_execution_id=execution_id,
        ),
    )
    return ForksOut(
        items=[execution_out(item) for item in reply.executions], total=reply.page.total
    )
