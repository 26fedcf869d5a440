"""Executions: list, read, control, human input, retry, logs and live event streams."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response, WebSocket, status
from fastapi.responses import StreamingResponse
from heddle.v1 import log_pb2, workflow_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException

from libs.common import jsonutil
from libs.common.errors import HeddleError, NotFound
from libs.common.jsontypes import JsonDatetime
from services.gateway.auth import Principal, Security, authenticate_connection, get_security
from services.gateway.convert import execution_out, log_record_out, paginate, to_timestamp
from services.gateway.errors import error_body
from services.gateway.openapi import SSE_DESCRIPTION
from services.gateway.roles import WorkflowAction
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Paging,
    Tenant,
    bounded_page_size,
    checked_id,
    get_clients,
    get_settings,
)
from services.gateway.schemas import (
    INT32_MAX,
    INT64_MAX,
    TERMINAL_STATUSES,
    ExecutionOut,
    ExecutionStarted,
    ExecutionStatus,
    LogLevel,
    LogPage,
    Page,
    SubmitInputRequest,
)
from services.gateway.streams import InteractiveSession, sse_body, ws_close_code

router = APIRouter(prefix="/api/v1", tags=["executions"], responses=ERROR_RESPONSES)
ws_router = APIRouter(tags=["executions"])

_Control = workflow_pb2.ControlExecutionRequest


@router.get("/executions", summary="List executions, newest first")
async def list_executions(
    clients: Clients,
    tenant: Tenant,
    paging: Paging,
    caller: Caller,
    guard: Guard,
    workflow_id: Annotated[str | None, Query(description="Only this workflow's.")] = None,
    execution_status: Annotated[ExecutionStatus | None, Query(alias="status")] = None,
    parent_execution_id: Annotated[
        str | None,
        Query(description="Only the children of this execution (subworkflow, map, delegation)."),
    ] = None,
    include_hidden: Annotated[
        bool,
        Query(
            description="Also the executions of hidden workflows (an agent's chat and "
            "delegation runs), which are left out unless asked for here or named by "
            "`workflow_id` or `parent_execution_id`; a parent's `children` link them."
        ),
    ] = False,
) -> Page[ExecutionOut]:
    guard.require(caller, "read")
    visible = await guard.visible_workflows(caller)
    reply = await clients.call(
        clients.workflow.ListExecutions,
        workflow_pb2.ListExecutionsRequest(
            page=paging.proto(),
            workflow_id=workflow_id or "",
            status=execution_status or "",
            tenant_id=tenant,
            restrict_to_workflows=visible is not None,
            workflow_ids=visible or [],
            parent_execution_id=parent_execution_id or "",
            include_hidden=include_hidden,
        ),
    )
    return paginate([execution_out(e) for e in reply.executions], reply.page)


async def _get_execution(
    clients: Clients, execution_id: str, tenant: str, summary: bool = False
) -> ExecutionOut:
    reply = await clients.call(
        clients.workflow.GetExecution,
        workflow_pb2.GetExecutionRequest(
            id=checked_id(execution_id, "execution"), tenant_id=tenant, summary=summary
        ),
    )
    return execution_out(reply)


async def _authorized(
    clients: Clients,
    guard: Security,
    caller: Principal,
    execution_id: str,
    action: WorkflowAction,
    summary: bool = False,
) -> ExecutionOut:
    """The execution, when the caller's role on its workflow allows action; an execution of
    a workflow the caller may not read is a 404, like one of another tenant. summary: read
    without the node records (the controls and streams need only the status)."""
    execution = await _get_execution(clients, execution_id, caller.tenant_id, summary)
    try:
        await guard.require_workflow(caller, execution.workflow_id, action)
    except NotFound:
        raise NotFound(f"execution {execution_id!r} not found") from None
    return execution


def _etag(execution: ExecutionOut, representation: str) -> str:
    """The validator of an execution's representation, without hashing a body that is
    megabytes for a 1000-node execution: a change to an execution (its status, a node's
    status, output or error) is written with its event in the same transaction, which
    advances last_seq, so (last_seq, status) names the state. One exception: the `lost`
    attempt a takeover records is seen with the node's next event (its re-dispatch). Nodes
    are read after the execution's row, so a body is never older than its validator (a
    poller never keeps a stale body). The view and node page are part of it."""
    return f'"{execution.id}.{execution.last_seq}.{execution.status}.{representation}"'


@router.get(
    "/executions/{execution_id}",
    summary="An execution with every node's status, attempts, output, error and timings",
    response_model=ExecutionOut,
    responses={304: {"description": "Unchanged since the ETag sent in If-None-Match"}},
)
async def get_execution(
    execution_id: str,
    clients: Clients,
    caller: Caller,
    guard: Guard,
    view: Annotated[
        Literal["full", "summary"],
        Query(description="summary: the execution without its node records (one row read)."),
    ] = "full",
    node_offset: Annotated[
        int, Query(ge=0, le=INT32_MAX, description="Skip this many node records.")
    ] = 0,
    node_limit: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="At most this many node records.")
    ] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1000)] = None,
) -> Response:
    summary = view == "summary"
    representation = f"{view}.{node_offset}.{'' if node_limit is None else node_limit}"
    offered = (
        {tag.strip() for tag in if_none_match.split(",")} if if_none_match is not None else set()
    )
    # A poller that holds the current representation is answered from the execution's row
    # (one row read, as for the summary): its nodes are read only when something changed.
    execution = await _authorized(
        clients, guard, caller, execution_id, "read", summary=summary or bool(offered)
    )
    etag = _etag(execution, representation)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in offered:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    if offered and not summary:
        execution = await _get_execution(clients, execution_id, caller.tenant_id)
        headers["ETag"] = _etag(execution, representation)
    if node_offset or node_limit is not None:
        end = None if node_limit is None else node_offset + node_limit
        execution.nodes = execution.nodes[node_offset:end]
    body = jsonutil.dumps(execution.model_dump(mode="json"))
    return Response(body, media_type="application/json", headers=headers)


def _add_control_route(name: str, action: _Control.Action, summary: str) -> None:
    async def control(
        execution_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
    ) -> ExecutionOut:
        await _authorized(clients, guard, caller, execution_id, "execute", summary=True)
        reply = await clients.call(
            clients.workflow.ControlExecution,
            _Control(id=checked_id(execution_id, "execution"), action=action, tenant_id=tenant),
        )
        return execution_out(reply)

    control.__name__ = f"{name}_execution"
    router.add_api_route(
        f"/executions/{{execution_id}}/{name}",
        control,
        methods=["POST"],
        response_model=ExecutionOut,
        summary=summary,
    )


_add_control_route("cancel", _Control.CANCEL, "Cancel: stop what runs, dispatch nothing more")
_add_control_route("pause", _Control.PAUSE, "Pause: let running nodes finish, dispatch nothing")
_add_control_route("resume", _Control.RESUME, "Resume a paused execution")


@router.post("/executions/{execution_id}/input", summary="Answer a waiting human_input node")
async def submit_input(
    execution_id: str,
    body: SubmitInputRequest,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> ExecutionOut:
    await _authorized(clients, guard, caller, execution_id, "execute", summary=True)
    reply = await clients.call(
        clients.workflow.SubmitInput,
        workflow_pb2.SubmitInputRequest(
            id=checked_id(execution_id, "execution"),
            node_id=body.node_id,
            data_json=jsonutil.dumps(body.data),
            tenant_id=tenant,
        ),
    )
    return execution_out(reply)


@router.post(
    "/executions/{execution_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Re-run a failed execution, reusing the outputs of the nodes that succeeded",
)
async def retry_execution(
    execution_id: str,
    request: Request,
    response: Response,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> ExecutionStarted:
    await _authorized(clients, guard, caller, execution_id, "execute", summary=True)
    reply = await clients.call(
        clients.workflow.RetryExecution,
        workflow_pb2.RetryExecutionRequest(
            id=checked_id(execution_id, "execution"), tenant_id=tenant
        ),
    )
    response.headers["Location"] = f"/api/v1/executions/{reply.execution_id}"
    return ExecutionStarted(
        execution_id=reply.execution_id, status=reply.status, created=reply.created
    )


@router.get("/executions/{execution_id}/logs", summary="Logs of an execution", tags=["logs"])
async def query_logs(
    execution_id: str,
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
    node_id: Annotated[str | None, Query(description="Only this node's.")] = None,
    level: Annotated[LogLevel | None, Query(description="Minimum level.")] = None,
    text: Annotated[str | None, Query(max_length=500, description="Substring to find.")] = None,
    since: JsonDatetime | None = None,
    until: JsonDatetime | None = None,
    page_size: Annotated[int | None, Query(ge=1, description="Records per page.")] = None,
    page_token: Annotated[str | None, Query(max_length=1000)] = None,
) -> LogPage:
    size = bounded_page_size(request, page_size)  # a bad request is a 422 before a 404
    await _authorized(clients, guard, caller, execution_id, "read", summary=True)
    reply = await clients.call(
        clients.log.QueryLogs,
        log_pb2.QueryLogsRequest(
            execution_id=checked_id(execution_id, "execution"),
            node_id=node_id or "",
            level=level or "",
            text=text or "",
            since=to_timestamp(since),
            until=to_timestamp(until),
            page_size=size,
            page_token=page_token or "",
            tenant_id=tenant,
        ),
    )
    return LogPage(
        records=[log_record_out(record) for record in reply.records],
        next_page_token=reply.next_page_token or None,
    )


AfterSeq = Annotated[
    int | None,
    Query(
        ge=0,
        le=INT64_MAX,
        description="Resume after this sequence number; replay from the first if unset.",
    ),
]


@router.get(
    "/executions/{execution_id}/events",
    summary="Live events as Server-Sent Events",
    description=SSE_DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "`id`/`event`/`data` frames"},
        204: {"description": "Nothing after the resume point and the execution has ended"},
    },
)
async def stream_events(
    execution_id: str,
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
    after: AfterSeq = None,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="last-event-id",
            ge=0,
            le=INT64_MAX,
            description="Sent by a reconnecting EventSource: the `id` (seq) of the last event "
            "it received. Wins over ?after=.",
        ),
    ] = None,
    access_token: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="The credential, for clients (EventSource) that cannot send headers.",
        ),
    ] = None,
) -> Response:
    after_seq = last_event_id if last_event_id is not None else after or 0
    # Read first, so that an unknown id is a 404 rather than an error inside a 200 stream.
    execution = await _authorized(clients, guard, caller, execution_id, "read", summary=True)
    if execution.status in TERMINAL_STATUSES and 0 < execution.last_seq <= after_seq:
        # 204 tells a browser's EventSource to stop reconnecting: there is nothing more.
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    events = clients.stream_events(execution.id, after_seq, tenant)
    return StreamingResponse(
        sse_body(events, get_settings(request).sse_heartbeat_s),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@ws_router.websocket("/ws/v1/executions/{execution_id}")
async def execution_websocket(
    websocket: WebSocket, execution_id: str, after: AfterSeq = None
) -> None:
    """The same events as the SSE route, one JSON text frame each.

    Authenticated like the HTTP routes (Authorization header, or `?access_token=` for
    browsers). An error (no credential, unknown id, service down) is sent as an
    `{"error": ...}` frame, then the socket closes with 4000 + the HTTP status (4401, 4404,
    4503...).
    """
    clients = get_clients(websocket)
    await websocket.accept()
    try:
        try:
            caller = await authenticate_connection(websocket)
        except StarletteHTTPException as refused:
            code = "resource_exhausted" if refused.status_code == 429 else "unauthenticated"
            body = error_body(code, str(refused.detail))
            await websocket.send_text(jsonutil.dumps_str(body))
            await websocket.close(code=4000 + refused.status_code)
            return
        execution = await _authorized(
            clients, get_security(websocket), caller, execution_id, "read"
        )
    except HeddleError as error:
        await websocket.send_text(jsonutil.dumps_str(error_body(**error.to_dict())))
        await websocket.close(code=ws_close_code(error))
        return
    await _interactive(websocket, caller).run(initial=execution.id, after=after or 0)


def _interactive(websocket: WebSocket, caller: Principal) -> InteractiveSession:
    clients, guard = get_clients(websocket), get_security(websocket)

    async def authorize(execution_id: str, action: str) -> ExecutionOut:
        return await _authorized(clients, guard, caller, execution_id, action)  # type: ignore[arg-type]

    return InteractiveSession(websocket, clients, guard, caller, authorize)


@ws_router.websocket("/ws/v1/stream")
async def interactive_websocket(websocket: WebSocket) -> None:
    """One socket for many executions: the client sends `subscribe`/`unsubscribe` (an
    execution, or every execution of a workflow), `send_input`, `execute_workflow` (start and
    follow), `cancel` and `ping`, each answered with an `ack` or an `error` frame; events of
    every followed execution arrive as on /ws/v1/executions/{id}. A bad frame gets an error
    frame and the socket stays open. Authenticated as the other routes; a refused credential
    is an error frame and close code 4401."""
    await websocket.accept()
    try:
        caller = await authenticate_connection(websocket)
    except StarletteHTTPException as refused:
        code = "resource_exhausted" if refused.status_code == 429 else "unauthenticated"
        await websocket.send_text(jsonutil.dumps_str(error_body(code, str(refused.detail))))
        await websocket.close(code=4000 + refused.status_code)
        return
    except HeddleError as error:
        await websocket.send_text(jsonutil.dumps_str(error_body(**error.to_dict())))
        await websocket.close(code=ws_close_code(error))
        return
    await _interactive(websocket, caller).run()
