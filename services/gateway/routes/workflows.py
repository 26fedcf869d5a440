"""Workflow definitions: validate, create, list, read, new version, delete, execute."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from heddle.v1 import node_pb2, workflow_pb2

from libs.common import jsonutil
from libs.common.claimcheck import ClaimCheck
from libs.common.errors import NotFound, Unavailable, from_rpc_error
from services.gateway.auth import Principal, Security
from services.gateway.clients import broken_call, let_end
from services.gateway.convert import (
    execution_out,
    grant_out,
    paginate,
    validation_report,
    workflow_out,
)
from services.gateway.files import files_of
from services.gateway.inputs import prepare_inputs
from services.gateway.routes.common import (
    DEFINITION_BODY,
    ERROR_RESPONSES,
    VALIDATE_BODY,
    Caller,
    Clients,
    Guard,
    Paging,
    Tenant,
    authenticated_context,
    checked_id,
    read_definition,
)
from services.gateway.routes.snapshots import read_snapshot
from services.gateway.routes.versions import record_version_author
from services.gateway.schemas import (
    INT32_MAX,
    ExecuteRequest,
    ExecutionOut,
    ExecutionStarted,
    GrantIn,
    GrantList,
    GrantOut,
    NodeTypeList,
    Page,
    ValidationReport,
    WorkflowOut,
)

router = APIRouter(prefix="/api/v1", tags=["workflows"], responses=ERROR_RESPONSES)

# ---- the hot routes first: a request is matched against the routes in the order they were
# added (~20 us per route passed on a POST here), and POST /run and /execute are what most
# requests are.

RUN_WAIT_MAX_S = 300.0


@router.post(
    "/workflows/{workflow_id}/execute",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["executions"],
    summary="Start an execution",
)
async def execute_workflow(
    workflow_id: str,
    request: Request,
    response: Response,
    body: Annotated[ExecuteRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=256)] = None,
) -> ExecutionStarted:
    workflow_id = checked_id(workflow_id, "workflow")
    clients, guard, caller = authenticated_context(request)
    reply = await _start(
        workflow_id, body, idempotency_key, clients, caller.tenant_id, caller, guard, request.app
    )
    response.headers["Location"] = f"/api/v1/executions/{reply.execution_id}"
    return ExecutionStarted(
        execution_id=reply.execution_id, status=reply.status, created=reply.created
    )


@router.post(
    "/workflows/{workflow_id}/run",
    tags=["executions"],
    summary="Start an execution and answer with its outcome when it ends (blocking mode)",
    description="200 with the finished execution (status, outputs or error; no per-node "
    "records: GET the execution for those) when it ends within `wait` seconds, otherwise 202 "
    "with its id, as /execute answers, to wait again or follow its events. The wait is a "
    "completion notification in the workflow service, not a poll loop.",
    responses={
        status.HTTP_202_ACCEPTED: {
            "model": ExecutionStarted,
            "description": "Still running when the wait ran out",
        }
    },
)
async def run_workflow(
    workflow_id: str,
    request: Request,
    body: Annotated[ExecuteRequest | None, Body()] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=256)] = None,
    wait: Annotated[
        float,
        Query(gt=0, le=RUN_WAIT_MAX_S, description="Seconds to wait for the end (default 30)."),
    ] = 30.0,
) -> ExecutionOut:
    workflow_id = checked_id(workflow_id, "workflow")
    clients, guard, caller = authenticated_context(request)
    tenant = caller.tenant_id
    start = await _start_request(
        workflow_id, body, idempotency_key, clients, tenant, caller, guard, request.app
    )
    started, finished = await _run_and_wait(clients, start, tenant, wait)
    if finished is None:
        assert started is not None
        location = f"/api/v1/executions/{started.execution_id}"
        still_running = ExecutionStarted(
            execution_id=started.execution_id, status=started.status, created=started.created
        )
        return JSONResponse(  # type: ignore[return-value]
            still_running.model_dump(),
            status_code=status.HTTP_202_ACCEPTED,
            headers={"Location": location},
        )
    return execution_out(finished)


@router.get(
    "/node-types",
    tags=["catalog"],
    response_model=NodeTypeList,
    summary="Node types with their input, output and param schemas",
)
async def list_node_types(
    clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> Response:
    guard.require(caller, "read_catalog")
    # The built-in types and the tenant's custom ones (`source`: builtin/worker, `connected`).
    reply = await clients.call(
        clients.workflow.ListNodeTypes, node_pb2.ListNodeTypesRequest(tenant_id=tenant)
    )
    # Already JSON from the workflow service: pass it through rather than re-encode it.
    node_types = jsonutil.loads(reply.node_types_json) or []
    return Response(jsonutil.dumps({"node_types": node_types}), media_type="application/json")


@router.post(
    "/workflows/validate",
    summary="Validate a definition without saving it",
    openapi_extra=VALIDATE_BODY,
)
async def validate_workflow(
    request: Request, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> ValidationReport:
    guard.require(caller, "validate_workflow")
    definition = await read_definition(request)
    reply = await clients.call(
        clients.workflow.ValidateWorkflow,
        workflow_pb2.ValidateWorkflowRequest(definition_json=definition, tenant_id=tenant),
    )
    return validation_report(reply)


@router.get("/workflows", summary="List workflows (latest versions, without definitions)")
async def list_workflows(
    clients: Clients, tenant: Tenant, paging: Paging, caller: Caller, guard: Guard
) -> Page[WorkflowOut]:
    guard.require(caller, "read")
    visible = await guard.visible_workflows(caller)
    reply = await clients.call(
        clients.workflow.ListWorkflows,
        workflow_pb2.ListWorkflowsRequest(
            page=paging.proto(),
            tenant_id=tenant,
            restrict_to_ids=visible is not None,
            ids=visible or [],
        ),
    )
    return paginate([workflow_out(w) for w in reply.workflows], reply.page)


@router.post(
    "/workflows",
    status_code=status.HTTP_201_CREATED,
    summary="Create a workflow (version 1)",
    openapi_extra=DEFINITION_BODY,
)
async def create_workflow(
    request: Request,
    response: Response,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> WorkflowOut:
    guard.require(caller, "create_workflow")
    definition = await read_definition(request)
    reply = await clients.call(
        clients.workflow.CreateWorkflow,
        workflow_pb2.CreateWorkflowRequest(definition_json=definition, tenant_id=tenant),
    )
    request.state.audit_object_id = reply.id
    await guard.owner_created(caller, reply.id)
    await record_version_author(guard, caller, reply)
    response.headers["Location"] = f"/api/v1/workflows/{reply.id}"
    return workflow_out(reply)


@router.get("/workflows/{workflow_id}", summary="Read a workflow (latest or ?version=N)")
async def get_workflow(
    workflow_id: str,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
    version: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="A past version; latest if unset.")
    ] = None,
) -> WorkflowOut:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "read")
    reply = await clients.call(
        clients.workflow.GetWorkflow,
        workflow_pb2.GetWorkflowRequest(id=workflow_id, version=version or 0, tenant_id=tenant),
    )
    return workflow_out(reply)


@router.put(
    "/workflows/{workflow_id}",
    summary="Save a new version of a workflow",
    openapi_extra=DEFINITION_BODY,
)
async def update_workflow(
    workflow_id: str,
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> WorkflowOut:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "update")
    definition = await read_definition(request)
    reply = await clients.call(
        clients.workflow.UpdateWorkflow,
        workflow_pb2.UpdateWorkflowRequest(
            id=workflow_id, definition_json=definition, tenant_id=tenant
        ),
    )
    await record_version_author(guard, caller, reply)
    return workflow_out(reply)


@router.delete(
    "/workflows/{workflow_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a workflow and its versions",
)
async def delete_workflow(
    workflow_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> None:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "delete")
    await clients.call(
        clients.workflow.DeleteWorkflow,
        workflow_pb2.DeleteWorkflowRequest(id=workflow_id, tenant_id=tenant),
    )
    await guard.workflow_deleted(caller, workflow_id)


async def _start(
    workflow_id: str,
    body: ExecuteRequest | None,
    idempotency_key: str | None,
    clients: Clients,
    tenant: str,
    caller: Principal,
    guard: Security,
    app: Any = None,
) -> workflow_pb2.StartExecutionResponse:
    request = await _start_request(
        workflow_id, body, idempotency_key, clients, tenant, caller, guard, app
    )
    return await clients.start_execution(request)  # sent again while it breaks: see its id


async def _start_request(
    workflow_id: str,
    body: ExecuteRequest | None,
    idempotency_key: str | None,
    clients: Clients,
    tenant: str,
    caller: Principal,
    guard: Security,
    app: Any = None,
) -> workflow_pb2.StartExecutionRequest:
    """The start, checked (the caller's role, snapshot, file inputs and claim checks), with
    the id the execution is to take: chosen here, so that a call broken before its answer
    can be waited on, or sent again, by it without starting a second execution."""
    body = body or ExecuteRequest()
    await guard.require_workflow(caller, workflow_id, "execute")
    inputs = body.inputs
    version = body.version or 0
    reuse_json = b""
    if body.from_snapshot and app is not None:
        snapshot = await read_snapshot(app, tenant, workflow_id, body.from_snapshot)
        reuse_json = jsonutil.dumps(snapshot.get("nodes") or {})
        inputs = inputs or snapshot.get("inputs") or {}
        version = version or int(snapshot.get("workflow_version") or 0)
    if app is not None:  # file inputs and the claim check (services/gateway/inputs.py)
        inputs = await prepare_inputs(
            inputs,
            tenant_id=tenant,
            workflow_id=workflow_id,
            version=version,
            clients=clients,
            files=files_of(app),
            claims=ClaimCheck(app.state.artifacts, app.state.settings.claim_check_bytes),
        )
    return workflow_pb2.StartExecutionRequest(
        workflow_id=workflow_id,
        version=version,
        inputs_json=jsonutil.dumps(inputs),
        reuse_json=reuse_json,
        idempotency_key=body.idempotency_key or idempotency_key or "",
        tenant_id=tenant,
        trigger="api",
        priority=body.priority,
        execution_id=str(uuid.uuid4()),
    )


_REWAIT_S = 5.0
#: For a workflow service older than the start's execution_id (which it ignores): its
#: RunExecution(Once)'s `started` only when the run has not ended this long after its start.
#: A service that takes the id waits the whole wait on the replica that drives the run (an
#: in-memory event) and answers `finished` at the end: the gateway knows the id, so it needs
#: no `started` to wait again after a broken call. (After `started` the wait is a
#: WaitExecution on any replica, which reads the row again on each of the execution's
#: writes: with 0.1 s, 20 clients' 10-node runs of 0.3-0.4 s cost the workflow replicas
#: ~2.4 ms more CPU per execution.)
_STARTED_AFTER_S = 1.0
#: How many times a broken POST /run sends its start again after its wait by id found no
#: execution (the start never committed); each is idempotent by the id.
_RESENDS = 3


async def _wait_final(
    clients: Clients, execution_id: str, tenant: str, wait_s: float
) -> workflow_pb2.Execution | None:
    """The execution once it ended, or None when wait_s ran out first. A wait is a read: when
    its connection goes away under it (a replica stopping, the channel's maximum connection
    age), it is made again for the time that is left."""
    deadline = time.monotonic() + wait_s
    request = workflow_pb2.WaitExecutionRequest(id=execution_id, tenant_id=tenant, summary=True)
    unavailable_since: float | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            finished: workflow_pb2.Execution = await clients.workflow.WaitExecution(
                request, timeout=remaining
            )
            return finished
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return None
            now = time.monotonic()
            unavailable_since = unavailable_since or now
            # Broken for this long: the workflow service is down, not one connection.
            if not broken_call(error) or now - unavailable_since > _REWAIT_S:
                raise from_rpc_error(error) from None
            await asyncio.sleep(min(0.2, max(0.0, deadline - now)))


async def _run_and_wait(
    clients: Clients, start: workflow_pb2.StartExecutionRequest, tenant: str, wait_s: float
) -> tuple[workflow_pb2.StartExecutionResponse | None, workflow_pb2.Execution | None]:
    """Start, and wait up to wait_s for the end: one unary RunExecutionOnce, which the
    replica that drives the run answers with `finished` at its end (one call, its message and
    status in one exchange), or `started` when the wait ran out there or the start found an
    execution (its idempotency key or id: maybe driven elsewhere, waited on with a read,
    WaitExecution). A call broken on the way is recovered by the start's execution_id
    (_recover_run). (started, finished) as _run_and_wait_stream's; a workflow service without
    RunExecutionOnce gets the RunExecution stream."""
    deadline = time.monotonic() + wait_s
    request = workflow_pb2.RunExecutionRequest(
        start=start, wait_s=wait_s, started_after_s=_STARTED_AFTER_S
    )
    try:
        reply = await clients.run_execution_once(request, wait_s + clients.settings.grpc_deadline_s)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            return await _run_and_wait_stream(clients, start, tenant, wait_s)
        if not start.execution_id or not broken_call(error):
            raise from_rpc_error(error) from None
        return await _recover_run(clients, start, tenant, deadline)
    return await _after_reply(clients, reply, tenant, deadline)


def _created_here(started: workflow_pb2.StartExecutionResponse, start_id: str) -> None:
    """A start sent again after a broken call finds the execution its first send made: the
    id this request chose is this request's execution, created by it (not another request's
    that an idempotency key found)."""
    if start_id and started.execution_id == start_id:
        started.created = True


async def _after_reply(
    clients: Clients,
    reply: workflow_pb2.RunExecutionReply,
    tenant: str,
    deadline: float,
    start_id: str = "",
) -> tuple[workflow_pb2.StartExecutionResponse | None, workflow_pb2.Execution | None]:
    """RunExecutionOnce's answer: `finished`, or `started` and then a wait by its id."""
    if reply.HasField("finished"):
        return None, reply.finished
    if not reply.HasField("started"):  # not a workflow service's answer
        raise Unavailable("the workflow service answered the run without starting it")
    _created_here(reply.started, start_id)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return reply.started, None
    return reply.started, await _wait_final(clients, reply.started.execution_id, tenant, remaining)


async def _recover_run(
    clients: Clients, start: workflow_pb2.StartExecutionRequest, tenant: str, deadline: float
) -> tuple[workflow_pb2.StartExecutionResponse | None, workflow_pb2.Execution | None]:
    """A RunExecutionOnce broken before its answer (the replica gone, a reset): its start may
    or may not have committed. Waited on by the id it carries; when no execution has it (the
    start never committed), the start is sent again with it (a repeat answers the same
    execution) and waited on again, within the request's wait. Once the wait ran out the
    start is made sure of (sent again, idempotent by the id) before answering with the id.
    Unavailable (503) when the workflow service stays down."""
    for _ in range(_RESENDS):
        remaining = deadline - time.monotonic()
        if remaining > 0:
            try:
                finished = await _wait_final(clients, start.execution_id, tenant, remaining)
            except NotFound:
                finished = None  # the start never committed: sent again below
            if finished is not None:
                return None, finished
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            started = await clients.start_execution(start)
            _created_here(started, start.execution_id)
            return started, None
        again = workflow_pb2.RunExecutionRequest(
            start=start, wait_s=remaining, started_after_s=_STARTED_AFTER_S
        )
        try:
            reply = await clients.run_execution_once(
                again, remaining + clients.settings.grpc_deadline_s
            )
        except grpc.RpcError as error:
            if not broken_call(error):
                raise from_rpc_error(error) from None
            continue  # broken again: wait by the id again
        return await _after_reply(clients, reply, tenant, deadline, start.execution_id)
    raise Unavailable("the workflow service kept breaking the run's calls")


async def _run_and_wait_stream(
    clients: Clients, start: workflow_pb2.StartExecutionRequest, tenant: str, wait_s: float
) -> tuple[workflow_pb2.StartExecutionResponse | None, workflow_pb2.Execution | None]:
    """Start, then wait up to wait_s for the end, in one RunExecution call: the replica that
    starts the execution drives it, so the wait is an in-memory event there (a second call
    went to the other replica half the time, to be woken by a notice between replicas).
    (started, finished): finished None when the wait ran out (started is then given);
    started None when the run ended within _STARTED_AFTER_S (finished alone came).
    Once the start was answered, a broken stream is waited on as a read (WaitExecution);
    a workflow service without RunExecution gets StartExecution and WaitExecution."""
    deadline = time.monotonic() + wait_s
    call = clients.run_execution(
        workflow_pb2.RunExecutionRequest(
            start=start, wait_s=wait_s, started_after_s=_STARTED_AFTER_S
        ),
        timeout=wait_s + clients.settings.grpc_deadline_s,
    )
    started: workflow_pb2.StartExecutionResponse | None = None
    finished = False
    try:
        while (reply := await call.read()) is not grpc.aio.EOF:
            if reply.HasField("started"):
                started = reply.started
            elif reply.HasField("finished"):
                finished = True  # with no `started` when it ended within _STARTED_AFTER_S
                return started, reply.finished
    except grpc.RpcError as error:
        if started is None:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise from_rpc_error(error) from None
            started = await clients.call(clients.workflow.StartExecution, start)
    finally:
        # The service ends the stream right after `finished`: cancelling it then would only
        # send a RST_STREAM (a write) for a call its trailers end anyway.
        if finished:
            let_end(call)
        else:
            call.cancel()
    if started is None:  # the stream ended without a reply: not a workflow service's answer
        raise Unavailable("the workflow service ended the run without starting it")
    remaining = deadline - time.monotonic()
    if remaining <= 0 or (call.done() and await call.code() == grpc.StatusCode.OK):
        return started, None  # the wait ran out on the workflow service
    return started, await _wait_final(clients, started.execution_id, tenant, remaining)


# ---- roles --------------------------------------------------------------------------------


@router.get("/workflows/{workflow_id}/grants", summary="Who holds which role on a workflow")
async def list_grants(
    workflow_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> GrantList:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "read")
    await _existing(clients, workflow_id, tenant)
    return GrantList(grants=[grant_out(row) for row in await guard.grants(caller, workflow_id)])


@router.put(
    "/workflows/{workflow_id}/grants",
    summary="Give a principal (key:<api key id> or user:<JWT subject>) a role on a workflow",
)
async def put_grant(
    workflow_id: str,
    body: GrantIn,
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> GrantOut:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "share")
    await _existing(clients, workflow_id, tenant)
    row = await guard.grant(caller, workflow_id, body.principal, body.role)
    request.state.audit_object_id = f"{workflow_id}/{body.principal}"
    return grant_out(row)


@router.delete(
    "/workflows/{workflow_id}/grants/{principal}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Take a principal's role on a workflow away",
)
async def delete_grant(
    workflow_id: str, principal: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> None:
    workflow_id = checked_id(workflow_id, "workflow")
    await guard.require_workflow(caller, workflow_id, "share")
    await _existing(clients, workflow_id, tenant)
    await guard.revoke_grant(caller, workflow_id, principal)


async def _existing(clients: Clients, workflow_id: str, tenant: str) -> None:
    """404 unless the workflow exists in the tenant (an admin passes the role check first)."""
    await clients.call(
        clients.workflow.GetWorkflow,
        workflow_pb2.GetWorkflowRequest(id=workflow_id, tenant_id=tenant),
    )
