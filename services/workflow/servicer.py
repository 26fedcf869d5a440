"""WorkflowService over gRPC: protobuf <-> domain, nothing else."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from heddle.v1 import common_pb2, events_pb2, node_pb2, workflow_pb2, workflow_pb2_grpc

from libs.common import jsonutil
from libs.common.errors import InvalidArgument, NotFound
from libs.common.timeutil import optional_timestamp
from services.workflow import repository as repo
from services.workflow.engine import Engine
from services.workflow.following import Follower
from services.workflow.models import (
    DEFAULT_TENANT,
    ExecutionRow,
    NodeRunRow,
    SecretRow,
    WorkflowRow,
)
from services.workflow.models import WorkflowVersionRow as VersionRow
from services.workflow.relay import event_to_proto
from services.workflow.triggers import fire_from_proto, start_from_trigger
from services.workflow.workflows import WorkflowStore

_ACTIONS = {
    workflow_pb2.ControlExecutionRequest.CANCEL: "cancel",
    workflow_pb2.ControlExecutionRequest.PAUSE: "pause",
    workflow_pb2.ControlExecutionRequest.RESUME: "resume",
}


def _iso_ts(value: str | None) -> Timestamp | None:
    return optional_timestamp(dt.datetime.fromisoformat(value)) if value else None


def _error(error: dict[str, Any] | None) -> common_pb2.ErrorInfo | None:
    if not error:
        return None
    # A node error carries its own `details` ({"status": 404, ...}): they ARE the details,
    # not a field of them; other keys (an execution error's node_id) join them.
    nested = error.get("details")
    details: dict[str, Any] = (
        dict(nested) if isinstance(nested, dict) else {} if nested is None else {"details": nested}
    )
    details.update(
        (k, v) for k, v in error.items() if k not in ("type", "message", "retryable", "details")
    )
    return common_pb2.ErrorInfo(
        type=str(error.get("type", "")),
        message=str(error.get("message", "")),
        retryable=bool(error.get("retryable", False)),
        details_json=jsonutil.dumps(details or None),
    )


def _tenant(value: str) -> str:
    return value or DEFAULT_TENANT


def _priority(request: workflow_pb2.StartExecutionRequest) -> int:
    """The execution's priority: 0-9, 5 when unset."""
    if not request.HasField("priority"):
        return 5
    if not 0 <= request.priority <= 9:
        raise InvalidArgument(f"priority must be 0-9, got {request.priority}")
    return request.priority


def _execution_id(request: workflow_pb2.StartExecutionRequest) -> str | None:
    """The execution id the caller chose (None: the engine makes one), checked."""
    chosen = request.execution_id
    if not chosen:
        return None
    try:
        canonical = str(uuid.UUID(chosen))
    except ValueError:
        canonical = ""
    if canonical != chosen:
        raise InvalidArgument(
            f"StartExecutionRequest.execution_id must be a UUID in its canonical form "
            f"(lowercase 8-4-4-4-12 hex digits), got {chosen[:64]!r}"
        )
    if request.parent_execution_id and request.idempotency_key:
        raise InvalidArgument(
            "StartExecutionRequest.execution_id cannot be given with parent_execution_id and "
            "idempotency_key: a sub-workflow's id follows from its key"
        )
    return chosen


def _loads_field(data: bytes, field: str) -> Any:
    try:
        return jsonutil.loads(data)
    except ValueError as error:
        raise InvalidArgument(f"{field} is not valid JSON: {error}") from error


def _reused(data: bytes) -> dict[str, NodeRunRow]:
    """The completed nodes of a snapshot (StartExecutionRequest.reuse_json), as the rows a
    new execution starts from (the others run)."""
    value = _loads_field(data, "reuse_json")
    if not isinstance(value, dict):
        raise InvalidArgument("reuse_json must be an object of node ids")
    rows: dict[str, NodeRunRow] = {}
    for node_id, node in value.items():
        if not isinstance(node, dict):
            continue
        if node.get("status") == "pending" and isinstance(node.get("checkpoint"), dict):
            # A node that runs, starting from this checkpoint (a fork's edited agent journal).
            rows[str(node_id)] = NodeRunRow(
                node_id=str(node_id), status="pending", checkpoint=node["checkpoint"]
            )
            continue
        if node.get("status") not in ("succeeded", "cached"):
            continue
        rows[str(node_id)] = NodeRunRow(
            node_id=str(node_id),
            status=str(node["status"]),
            attempt=int(node.get("attempt") or 1),
            output=node.get("output"),
            active_ports=node.get("active_ports"),
            attempts=[],
            inputs=None,
            started_at=None,
            finished_at=None,
        )
    return rows


def workflow_to_proto(workflow: WorkflowRow, version: VersionRow | None) -> workflow_pb2.Workflow:
    return workflow_pb2.Workflow(
        id=workflow.id,
        name=workflow.name,
        version=version.version if version else workflow.latest_version,
        description=workflow.description,
        definition_json=jsonutil.dumps(version.definition) if version else b"",
        created_at=optional_timestamp(workflow.created_at),
        updated_at=optional_timestamp(workflow.updated_at),
        tenant_id=workflow.tenant_id,
    )


def node_to_proto(node: NodeRunRow, children: Sequence[str] = ()) -> workflow_pb2.NodeRun:
    return workflow_pb2.NodeRun(
        child_execution_ids=list(children),
        node_id=node.node_id,
        node_type=node.node_type,
        status=node.status,
        attempts=node.attempt,
        output_json=jsonutil.dumps(node.output),
        error=_error(node.error),
        started_at=optional_timestamp(node.started_at),
        finished_at=optional_timestamp(node.finished_at),
        attempt_history=[
            workflow_pb2.NodeAttempt(
                attempt=item.get("attempt", 0),
                status=item.get("status", ""),
                started_at=_iso_ts(item.get("started_at")),
                finished_at=_iso_ts(item.get("finished_at")),
                error=_error(item.get("error")),
            )
            for item in node.attempts or []
        ],
        waiting_json=jsonutil.dumps(node.waiting),
        inputs_json=jsonutil.dumps(node.inputs),
        checkpoint_json=jsonutil.dumps(node.checkpoint),
    )


def execution_to_proto(
    row: ExecutionRow,
    nodes: Sequence[NodeRunRow] = (),
    order: dict[str, int] | None = None,
    children: dict[str, list[str]] | None = None,
) -> workflow_pb2.Execution:
    ordered = sorted(nodes, key=lambda n: (order or {}).get(n.node_id, 1 << 30))
    return workflow_pb2.Execution(
        id=row.id,
        workflow_id=row.workflow_id,
        workflow_version=row.workflow_version,
        status=row.status,
        inputs_json=jsonutil.dumps(row.inputs),
        outputs_json=jsonutil.dumps(row.outputs),
        error=_error(row.error),
        created_at=optional_timestamp(row.created_at),
        started_at=optional_timestamp(row.started_at),
        finished_at=optional_timestamp(row.finished_at),
        nodes=[node_to_proto(node, (children or {}).get(node.node_id, ())) for node in ordered],
        parent_execution_id=row.parent_execution_id or "",
        parent_node_id=row.parent_node_id or "",
        trigger=row.trigger,
        idempotency_key=row.idempotency_key or "",
        tenant_id=row.tenant_id,
        trace_id=row.trace_id,
        last_seq=row.last_seq,
        retry_of=row.retry_of or "",
        priority=row.priority if row.priority is not None else 5,
        forked_from_execution_id=row.forked_from_execution_id or "",
        forked_from_node=row.forked_from_node or "",
    )


def _page(request_page: common_pb2.PageRequest, max_size: int) -> tuple[int, int]:
    page = request_page.page or 1
    size = request_page.page_size or 50
    if page < 1 or size < 1 or size > max_size:
        raise InvalidArgument(f"page must be >= 1 and page_size between 1 and {max_size}")
    return page, size


class WorkflowServicer(workflow_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, engine: Engine, store: WorkflowStore) -> None:
        self.engine = engine
        self.store = store
        self.sessions = engine.sessions
        self.max_page = engine.settings.max_page_size
        self.follower = Follower(engine)

    # ---- definitions --------------------------------------------------------------------

    async def ValidateWorkflow(
        self, request: workflow_pb2.ValidateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.ValidateWorkflowResponse:
        report = await self.store.validate(
            _loads_field(request.definition_json, "definition"), _tenant(request.tenant_id)
        )
        return workflow_pb2.ValidateWorkflowResponse(
            valid=report.valid,
            issues=[
                workflow_pb2.ValidationIssue(
                    code=issue.code,
                    message=issue.message,
                    node_id=issue.node_id or "",
                    edge=-1 if issue.edge is None else issue.edge,
                    field=issue.field or "",
                    severity=issue.severity,
                )
                for issue in [*report.errors, *report.warnings]
            ],
        )

    async def CreateWorkflow(
        self, request: workflow_pb2.CreateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        raw = _loads_field(request.definition_json, "definition")
        workflow, version = await self.store.create(
            _tenant(request.tenant_id), raw, hidden=request.hidden
        )
        return workflow_to_proto(workflow, version)

    async def UpdateWorkflow(
        self, request: workflow_pb2.UpdateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        raw = _loads_field(request.definition_json, "definition")
        workflow, version = await self.store.update(_tenant(request.tenant_id), request.id, raw)
        return workflow_to_proto(workflow, version)

    async def GetWorkflow(
        self, request: workflow_pb2.GetWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Workflow:
        workflow, version = await self.store.get(
            _tenant(request.tenant_id), request.id, request.version
        )
        return workflow_to_proto(workflow, version)

    async def ListWorkflows(
        self, request: workflow_pb2.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.ListWorkflowsResponse:
        page, size = _page(request.page, self.max_page)
        only_ids = list(request.ids) if request.restrict_to_ids else None
        rows, total = await self.store.list(_tenant(request.tenant_id), page, size, only_ids)
        return workflow_pb2.ListWorkflowsResponse(
            workflows=[workflow_to_proto(row, None) for row in rows],
            page=common_pb2.PageInfo(page=page, page_size=size, total=total),
        )

    async def DeleteWorkflow(
        self, request: workflow_pb2.DeleteWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.DeleteWorkflowResponse:
        await self.store.delete(_tenant(request.tenant_id), request.id)
        return workflow_pb2.DeleteWorkflowResponse()

    async def ListNodeTypes(
        self, request: node_pb2.ListNodeTypesRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.ListNodeTypesResponse:
        listing = await self.engine.catalog.listing(_tenant(request.tenant_id))
        return node_pb2.ListNodeTypesResponse(node_types_json=listing)

    # ---- executions ---------------------------------------------------------------------

    async def StartExecution(
        self, request: workflow_pb2.StartExecutionRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.StartExecutionResponse:
        row, created = await self.engine.start_execution(
            tenant_id=_tenant(request.tenant_id),
            workflow_id=request.workflow_id,
            version=request.version,
            inputs=_loads_field(request.inputs_json, "inputs"),
            idempotency_key=request.idempotency_key or None,
            parent_execution_id=request.parent_execution_id or None,
            parent_node_id=request.parent_node_id or None,
            trigger=request.trigger or "api",
            depth=request.depth,
            priority=_priority(request),
            reused=_reused(request.reuse_json) if request.reuse_json else None,
            forked_from=(request.forked_from_execution_id, request.forked_from_node)
            if request.forked_from_execution_id
            else None,
            execution_id=_execution_id(request),
        )
        return workflow_pb2.StartExecutionResponse(
            execution_id=row.id, status=row.status, created=created
        )

    async def RunExecution(
        self, request: workflow_pb2.RunExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[workflow_pb2.RunExecutionReply]:
        started = await self.StartExecution(request.start, context)
        wait_s = request.wait_s
        # Only a start made here is quiet: one an idempotency key found may be driven by
        # another replica, whose wait (reads, a notice) is not cut short for it. A caller
        # that chose the id needs no `started` to wait again by it.
        quiet_after = wait_s if request.start.execution_id else request.started_after_s
        quiet_s = min(max(0.0, quiet_after), wait_s) if started.created else 0.0
        if quiet_s <= 0:
            yield workflow_pb2.RunExecutionReply(started=started)
            if wait_s <= 0:
                return
        # Started here, so driven here (unless an idempotency key found one driven
        # elsewhere): its end is the runner's in-memory event (wait_final shields it: a
        # timeout cancels only this wait).
        tenant = _tenant(request.start.tenant_id)
        row = await self._final_within(tenant, started.execution_id, quiet_s or wait_s)
        if row is None and quiet_s > 0:
            yield workflow_pb2.RunExecutionReply(started=started)
            row = await self._final_within(tenant, started.execution_id, wait_s - quiet_s)
        if row is None:
            return  # still running: the caller answers with the id
        yield workflow_pb2.RunExecutionReply(finished=execution_to_proto(row))

    async def RunExecutionOnce(
        self, request: workflow_pb2.RunExecutionRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.RunExecutionReply:
        started = await self.StartExecution(request.start, context)
        if not started.created:  # maybe driven elsewhere: the caller waits with a read
            return workflow_pb2.RunExecutionReply(started=started)
        # A caller that chose the id waits the whole wait_s here: after a broken call it
        # waits again by that id, so it needs no early `started` (only an older gateway,
        # which does not choose it, gets one after started_after_s).
        quiet_s = 0.0 if request.start.execution_id else request.started_after_s
        wait_s = min(quiet_s, request.wait_s) if quiet_s > 0 else request.wait_s
        row = await self._final_within(
            _tenant(request.start.tenant_id), started.execution_id, max(0.0, wait_s)
        )
        if row is None:
            return workflow_pb2.RunExecutionReply(started=started)
        return workflow_pb2.RunExecutionReply(finished=execution_to_proto(row))

    async def _final_within(
        self, tenant: str, execution_id: str, wait_s: float
    ) -> ExecutionRow | None:
        """The execution's row once it ended, or None when wait_s ran out first."""
        try:
            async with asyncio.timeout(wait_s):
                return await self.follower.wait_final(tenant, execution_id)
        except TimeoutError:
            return None

    async def _load_execution(self, tenant_id: str, execution_id: str) -> workflow_pb2.Execution:
        async with self.sessions() as session:
            row = await repo.get_execution(session, tenant_id, execution_id)
            if row is None:
                raise NotFound(f"execution {execution_id!r} not found")
            nodes = await repo.node_runs(session, execution_id)
            version = await repo.get_version(session, row.workflow_id, row.workflow_version)
            children = await repo.child_executions(session, execution_id)
        order = {
            node["id"]: index
            for index, node in enumerate((version.definition if version else {}).get("nodes", []))
        }
        return execution_to_proto(row, nodes, order, children)

    async def GetExecution(
        self, request: workflow_pb2.GetExecutionRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Execution:
        tenant = _tenant(request.tenant_id)
        if request.summary:
            async with self.sessions() as session:
                row = await repo.get_execution(session, tenant, request.id)
            if row is None:
                raise NotFound(f"execution {request.id!r} not found")
            return execution_to_proto(row)
        return await self._load_execution(tenant, request.id)

    async def ListExecutions(
        self, request: workflow_pb2.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.ListExecutionsResponse:
        page, size = _page(request.page, self.max_page)
        async with self.sessions() as session:
            rows, total = await repo.list_executions(
                session,
                _tenant(request.tenant_id),
                (page - 1) * size,
                size,
                workflow_id=request.workflow_id or None,
                status=request.status or None,
                only_workflows=(
                    list(request.workflow_ids) if request.restrict_to_workflows else None
                ),
                trigger_prefix=request.trigger_prefix or None,
                forked_from=request.forked_from_execution_id or None,
                parent_execution_id=request.parent_execution_id or None,
                include_hidden=request.include_hidden,
            )
        return workflow_pb2.ListExecutionsResponse(
            executions=[execution_to_proto(row) for row in rows],
            page=common_pb2.PageInfo(page=page, page_size=size, total=total),
        )

    async def ControlExecution(
        self, request: workflow_pb2.ControlExecutionRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Execution:
        action = _ACTIONS.get(request.action)
        if action is None:
            raise InvalidArgument("action must be CANCEL, PAUSE or RESUME")
        tenant = _tenant(request.tenant_id)
        await self.engine.control(tenant, request.id, action)  # type: ignore[arg-type]
        return await self._load_execution(tenant, request.id)

    async def SubmitInput(
        self, request: workflow_pb2.SubmitInputRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Execution:
        tenant = _tenant(request.tenant_id)
        data = _loads_field(request.data_json, "data")
        await self.engine.submit_input(tenant, request.id, request.node_id, data)
        return await self._load_execution(tenant, request.id)

    async def RetryExecution(
        self, request: workflow_pb2.RetryExecutionRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.StartExecutionResponse:
        row, created = await self.engine.retry_execution(_tenant(request.tenant_id), request.id)
        return workflow_pb2.StartExecutionResponse(
            execution_id=row.id, status=row.status, created=created
        )

    async def WaitExecution(
        self, request: workflow_pb2.WaitExecutionRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.Execution:
        tenant = _tenant(request.tenant_id)
        row = await self.follower.wait_final(tenant, request.id)
        if request.summary:
            return execution_to_proto(row)
        return await self._load_execution(tenant, request.id)

    async def StreamEvents(
        self, request: workflow_pb2.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.Event]:
        events = self.follower.events(
            _tenant(request.tenant_id), request.execution_id, request.after_seq
        )
        async for event in events:
            yield event_to_proto(event)

    async def FireTrigger(
        self, request: workflow_pb2.FireTriggerRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.FireTriggerResponse:
        return workflow_pb2.FireTriggerResponse(
            execution_ids=await start_from_trigger(self.engine, fire_from_proto(request.fire))
        )

    # ---- secrets ------------------------------------------------------------------------

    async def PutSecret(
        self, request: workflow_pb2.PutSecretRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.PutSecretResponse:
        row, created = await self.engine.secrets.put(
            _tenant(request.tenant_id), request.name, request.value
        )
        return workflow_pb2.PutSecretResponse(secret=_secret_info(row), created=created)

    async def ListSecrets(
        self, request: workflow_pb2.ListSecretsRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.ListSecretsResponse:
        rows = await self.engine.secrets.list(_tenant(request.tenant_id))
        return workflow_pb2.ListSecretsResponse(secrets=[_secret_info(row) for row in rows])

    async def DeleteSecret(
        self, request: workflow_pb2.DeleteSecretRequest, context: grpc.aio.ServicerContext
    ) -> workflow_pb2.DeleteSecretResponse:
        await self.engine.secrets.delete(_tenant(request.tenant_id), request.name)
        return workflow_pb2.DeleteSecretResponse()


def _secret_info(row: SecretRow) -> workflow_pb2.SecretInfo:
    # Names and times only: the value (and its ciphertext) never leaves the service.
    return workflow_pb2.SecretInfo(
        name=row.name,
        created_at=optional_timestamp(row.created_at),
        updated_at=optional_timestamp(row.updated_at),
    )
