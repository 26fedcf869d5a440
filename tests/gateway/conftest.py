"""Fixtures of the gateway tests: in-memory fakes of the services behind the gateway, served
over real gRPC on port 0, and an HTTP client of the gateway app.

The fakes implement just enough behaviour to exercise the gateway's translation and error
layer; the real services have their own tests, and end-to-end tests drive them together.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from heddle.v1 import (
    ai_pb2,
    ai_pb2_grpc,
    common_pb2,
    events_pb2,
    log_pb2,
    log_pb2_grpc,
    node_pb2,
    scheduler_pb2,
    scheduler_pb2_grpc,
    tool_pb2,
    tool_pb2_grpc,
    workflow_pb2,
    workflow_pb2_grpc,
)

from libs.common import jsonutil
from libs.common.errors import FailedPrecondition, HeddleError, InvalidArgument, NotFound
from libs.common.grpcutil import GrpcServer, start_grpc_server
from services.gateway.app import create_app
from services.gateway.clients import ServiceClients
from services.gateway.server import GatewayServer
from services.gateway.settings import GatewaySettings

TERMINAL = {"succeeded", "failed", "cancelled"}
NODE_TYPES: list[dict[str, Any]] = [
    {"type": "input", "title": "Input"},
    {"type": "template", "title": "Template", "params_schema": {"type": "object"}},
    {"type": "output", "title": "Output"},
]


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    return stamp


def _page(items: list[Any], page: common_pb2.PageRequest) -> tuple[list[Any], common_pb2.PageInfo]:
    size = page.page_size or 50
    number = page.page or 1
    chunk = items[(number - 1) * size : number * size]
    return chunk, common_pb2.PageInfo(page=number, page_size=size, total=len(items))


class FakeWorkflowService(workflow_pb2_grpc.WorkflowServiceServicer):
    """An in-memory WorkflowService.

    Executions complete at once (every node succeeds, outputs = inputs) unless
    `auto_complete` is False; then a test drives them with `emit` and `finish`.
    `fail_next` makes the next call raise the given error.
    """

    def __init__(self) -> None:
        self.workflows: dict[str, list[workflow_pb2.Workflow]] = {}
        self.executions: dict[str, workflow_pb2.Execution] = {}
        self.events: dict[str, list[events_pb2.Event]] = {}
        self.requests: list[Any] = []
        self.auto_complete = True
        self.fail_next: HeddleError | None = None
        self.stream_cancelled = asyncio.Event()
        self._changed = asyncio.Condition()

    def _record(self, request: Any) -> None:
        self.requests.append(request)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    def _workflow(self, workflow_id: str, version: int = 0) -> workflow_pb2.Workflow:
        versions = self.workflows.get(workflow_id)
        if not versions or (version and version > len(versions)):
            raise NotFound(f"workflow {workflow_id} not found")
        return versions[version - 1] if version else versions[-1]

    def _execution(self, execution_id: str) -> workflow_pb2.Execution:
        if execution_id not in self.executions:
            raise NotFound(f"execution {execution_id} not found")
        return self.executions[execution_id]

    @staticmethod
    def _issues(definition: Any) -> list[workflow_pb2.ValidationIssue]:
        issues = []
        nodes = definition.get("nodes") or []
        if not nodes:
            issues.append(
                workflow_pb2.ValidationIssue(code="no_nodes", message="no nodes", edge=-1)
            )
        ids = {node.get("id") for node in nodes}
        for node in nodes:
            if node.get("type") not in {t["type"] for t in NODE_TYPES}:
                issues.append(
                    workflow_pb2.ValidationIssue(
                        code="unknown_node_type",
                        message=f"unknown node type {node.get('type')!r}",
                        node_id=node.get("id", ""),
                        field="type",
                        edge=-1,
                        severity="error",
                    )
                )
        for index, edge in enumerate(definition.get("edges") or []):
            if edge.get("target") not in ids:
                issues.append(
                    workflow_pb2.ValidationIssue(
                        code="dangling_edge", message="unknown target", edge=index, field="target"
                    )
                )
        return issues

    async def ValidateWorkflow(self, request, context):
        self._record(request)
        issues = self._issues(jsonutil.loads(request.definition_json))
        return workflow_pb2.ValidateWorkflowResponse(valid=not issues, issues=issues)

    def _save(self, workflow_id: str, definition_json: bytes) -> workflow_pb2.Workflow:
        definition = jsonutil.loads(definition_json)
        issues = self._issues(definition)
        if issues:
            report = workflow_pb2.ValidateWorkflowResponse(valid=False, issues=issues)
            raise InvalidArgument(
                "workflow definition is invalid",
                {"issues": [{"code": i.code, "node_id": i.node_id} for i in report.issues]},
            )
        versions = self.workflows.setdefault(workflow_id, [])
        workflow = workflow_pb2.Workflow(
            id=workflow_id,
            name=definition.get("name", ""),
            version=len(versions) + 1,
            description=definition.get("description", ""),
            definition_json=definition_json,
            created_at=_now(),
            updated_at=_now(),
        )
        versions.append(workflow)
        return workflow

    async def CreateWorkflow(self, request, context):
        self._record(request)
        return self._save(str(uuid.uuid4()), request.definition_json)

    async def UpdateWorkflow(self, request, context):
        self._record(request)
        self._workflow(request.id)
        return self._save(request.id, request.definition_json)

    async def GetWorkflow(self, request, context):
        self._record(request)
        return self._workflow(request.id, request.version)

    async def ListWorkflows(self, request, context):
        self._record(request)
        latest = []
        for versions in self.workflows.values():
            summary = workflow_pb2.Workflow()
            summary.CopyFrom(versions[-1])
            summary.ClearField("definition_json")
            latest.append(summary)
        items, info = _page(latest, request.page)
        return workflow_pb2.ListWorkflowsResponse(workflows=items, page=info)

    async def DeleteWorkflow(self, request, context):
        self._record(request)
        self._workflow(request.id)
        del self.workflows[request.id]
        return workflow_pb2.DeleteWorkflowResponse()

    async def ListNodeTypes(self, request, context):
        self._record(request)
        return node_pb2.ListNodeTypesResponse(node_types_json=jsonutil.dumps(NODE_TYPES))

    async def emit(
        self, execution_id: str, type_: str, node_id: str = "", data: Any = None
    ) -> events_pb2.Event:
        events = self.events[execution_id]
        event = events_pb2.Event(
            execution_id=execution_id,
            seq=len(events) + 1,
            type=type_,
            node_id=node_id,
            ts=_now(),
            data_json=jsonutil.dumps(data),
            trace_id="ab" * 16,
        )
        events.append(event)
        self.executions[execution_id].last_seq = event.seq
        async with self._changed:
            self._changed.notify_all()
        return event

    async def finish(self, execution_id: str, status: str, outputs: Any = None) -> None:
        execution = self.executions[execution_id]
        execution.status = status
        execution.outputs_json = jsonutil.dumps(outputs)
        execution.finished_at.CopyFrom(_now())
        kind = {"succeeded": "completed"}.get(status, status)
        await self.emit(execution_id, f"execution.{kind}")

    async def _start(
        self, workflow: workflow_pb2.Workflow, inputs_json: bytes, **fields: Any
    ) -> workflow_pb2.Execution:
        execution = workflow_pb2.Execution(
            id=str(uuid.uuid4()),
            workflow_id=workflow.id,
            workflow_version=workflow.version,
            status="running",
            inputs_json=inputs_json,
            created_at=_now(),
            started_at=_now(),
            trace_id="ab" * 16,
            **fields,
        )
        self.executions[execution.id] = execution
        self.events[execution.id] = []
        await self.emit(execution.id, "execution.started")
        if self.auto_complete:
            for node in jsonutil.loads(workflow.definition_json)["nodes"]:
                await self.emit(execution.id, "node.started", node["id"])
                run = execution.nodes.add(
                    node_id=node["id"],
                    node_type=node["type"],
                    status="succeeded",
                    attempts=1,
                    output_json=jsonutil.dumps({"text": "hi"}),
                    started_at=_now(),
                    finished_at=_now(),
                )
                run.finished_at.nanos = 12_000_000
                run.attempt_history.add(attempt=1, status="succeeded", started_at=_now())
                await self.emit(execution.id, "node.completed", node["id"], {"output": {"x": 1}})
            await self.finish(execution.id, "succeeded", jsonutil.loads(inputs_json))
        return execution

    async def StartExecution(self, request, context):
        self._record(request)
        workflow = self._workflow(request.workflow_id, request.version)
        for execution in self.executions.values():
            if request.idempotency_key and execution.idempotency_key == request.idempotency_key:
                return workflow_pb2.StartExecutionResponse(
                    execution_id=execution.id, status=execution.status, created=False
                )
        execution = await self._start(
            workflow,
            request.inputs_json,
            idempotency_key=request.idempotency_key,
            trigger=request.trigger,
        )
        return workflow_pb2.StartExecutionResponse(
            execution_id=execution.id, status=execution.status, created=True
        )

    async def GetExecution(self, request, context):
        self._record(request)
        return self._execution(request.id)

    async def ListExecutions(self, request, context):
        self._record(request)
        matching = []
        for execution in self.executions.values():
            if request.workflow_id and execution.workflow_id != request.workflow_id:
                continue
            if request.status and execution.status != request.status:
                continue
            summary = workflow_pb2.Execution()
            summary.CopyFrom(execution)
            summary.ClearField("nodes")
            matching.append(summary)
        items, info = _page(matching, request.page)
        return workflow_pb2.ListExecutionsResponse(executions=items, page=info)

    async def ControlExecution(self, request, context):
        self._record(request)
        execution = self._execution(request.id)
        if execution.status in TERMINAL:
            raise FailedPrecondition(f"execution is already {execution.status}")
        action = workflow_pb2.ControlExecutionRequest.Action.Name(request.action)
        if action == "CANCEL":
            await self.finish(execution.id, "cancelled")
        else:
            execution.status = "paused" if action == "PAUSE" else "running"
        return execution

    async def SubmitInput(self, request, context):
        self._record(request)
        execution = self._execution(request.id)
        if request.node_id not in {node.node_id for node in execution.nodes}:
            raise FailedPrecondition(f"node {request.node_id} is not waiting for input")
        return execution

    async def RetryExecution(self, request, context):
        self._record(request)
        previous = self._execution(request.id)
        if previous.status != "failed":
            raise FailedPrecondition("only a failed execution can be retried")
        workflow = self._workflow(previous.workflow_id)
        execution = await self._start(workflow, previous.inputs_json, retry_of=previous.id)
        return workflow_pb2.StartExecutionResponse(
            execution_id=execution.id, status=execution.status, created=True
        )

    async def WaitExecution(self, request, context):
        self._record(request)
        return self._execution(request.id)

    async def StreamEvents(self, request, context):
        self._record(request)
        execution = self._execution(request.execution_id)
        sent = request.after_seq
        try:
            while True:
                events = self.events[execution.id]
                for event in events[sent:]:
                    yield event
                    sent = event.seq
                if execution.status in TERMINAL and sent >= len(events):
                    return
                async with self._changed:
                    # Re-check under the lock: an emit between the yield and here is not lost.
                    if len(self.events[execution.id]) == sent and execution.status not in TERMINAL:
                        await self._changed.wait()
        except asyncio.CancelledError:
            self.stream_cancelled.set()
            raise

    async def FireTrigger(self, request, context):
        self._record(request)
        name = request.fire.source.removeprefix("webhook:")
        started = []
        for versions in list(self.workflows.values()):
            workflow = versions[-1]
            if jsonutil.loads(workflow.definition_json).get("webhook") == name:
                execution = await self._start(workflow, request.fire.inputs_json, trigger="webhook")
                started.append(execution.id)
        return workflow_pb2.FireTriggerResponse(execution_ids=started)


class FakeSchedulerService(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self) -> None:
        self.schedules: dict[str, scheduler_pb2.Schedule] = {}

    def _get(self, schedule_id: str) -> scheduler_pb2.Schedule:
        if schedule_id not in self.schedules:
            raise NotFound(f"schedule {schedule_id} not found")
        return self.schedules[schedule_id]

    @staticmethod
    def _check(spec: scheduler_pb2.ScheduleSpec) -> None:
        if len(spec.cron.split()) not in (5, 6):
            raise InvalidArgument(f"invalid cron expression {spec.cron!r}", {"field": "cron"})

    async def CreateSchedule(self, request, context):
        self._check(request.spec)
        schedule = scheduler_pb2.Schedule(
            id=str(uuid.uuid4()), spec=request.spec, created_at=_now(), next_fire_at=_now()
        )
        self.schedules[schedule.id] = schedule
        return schedule

    async def UpdateSchedule(self, request, context):
        self._check(request.spec)
        schedule = self._get(request.id)
        schedule.spec.CopyFrom(request.spec)
        return schedule

    async def GetSchedule(self, request, context):
        return self._get(request.id)

    async def ListSchedules(self, request, context):
        items, info = _page(list(self.schedules.values()), request.page)
        return scheduler_pb2.ListSchedulesResponse(schedules=items, page=info)

    async def DeleteSchedule(self, request, context):
        self._get(request.id)
        del self.schedules[request.id]
        return scheduler_pb2.DeleteScheduleResponse()

    async def TriggerSchedule(self, request, context):
        return scheduler_pb2.TriggerScheduleResponse(dedupe_key=f"{self._get(request.id).id}:now")

    async def PreviewSchedule(self, request, context):
        self._check(scheduler_pb2.ScheduleSpec(cron=request.cron))
        start = datetime(2025, 1, 1, tzinfo=UTC)
        times = []
        for minute in range(request.count):
            stamp = Timestamp()
            stamp.FromDatetime(start + timedelta(minutes=minute))
            times.append(stamp)
        return scheduler_pb2.PreviewScheduleResponse(fire_times=times)


class FakeLogService(log_pb2_grpc.LogServiceServicer):
    async def QueryLogs(self, request, context):
        records = [
            events_pb2.LogRecord(
                execution_id=request.execution_id,
                node_id=node_id,
                level="info",
                message=f"hello from {node_id}",
                ts=_now(),
                attempt=1,
                fields_json=jsonutil.dumps({"n": 1}),
            )
            for node_id in ("a", "b", "c")
            if not request.node_id or request.node_id == node_id
        ]
        start = int(request.page_token or 0)
        chunk = records[start : start + request.page_size]
        more = start + request.page_size < len(records)
        return log_pb2.QueryLogsResponse(
            records=chunk, next_page_token=str(start + request.page_size) if more else ""
        )


class FakeToolService(tool_pb2_grpc.ToolServiceServicer):
    async def ListTools(self, request, context):
        return tool_pb2.ListToolsResponse(
            tools=[
                tool_pb2.ToolInfo(
                    name="http_request",
                    description="HTTP call",
                    source="builtin",
                    input_schema_json=jsonutil.dumps({"type": "object"}),
                )
            ]
        )


class FakeAiService(ai_pb2_grpc.AiServiceServicer):
    async def ListModels(self, request, context):
        return ai_pb2.ListModelsResponse(
            models=[ai_pb2.ModelInfo(name="echo", provider="echo", healthy=True)]
        )


@dataclass
class Fakes:
    workflow: FakeWorkflowService
    scheduler: FakeSchedulerService
    server: GrpcServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def unused_address() -> str:
    """An address where nothing listens (a dependency that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    workflow, scheduler = FakeWorkflowService(), FakeSchedulerService()

    def register(server: grpc.aio.Server) -> None:
        workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(workflow, server)
        scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(scheduler, server)
        log_pb2_grpc.add_LogServiceServicer_to_server(FakeLogService(), server)
        tool_pb2_grpc.add_ToolServiceServicer_to_server(FakeToolService(), server)
        ai_pb2_grpc.add_AiServiceServicer_to_server(FakeAiService(), server)

    server = await start_grpc_server(
        "fakes",
        [f"heddle.v1.{name}Service" for name in ("Workflow", "Scheduler", "Log", "Tool", "Ai")],
        register,
    )
    yield Fakes(workflow=workflow, scheduler=scheduler, server=server)
    await server.stop(grace=0)


@pytest.fixture
def settings(fakes: Fakes, tmp_path: Path) -> GatewaySettings:
    address = fakes.address
    return GatewaySettings(
        # /readyz checks the gateway's own database too: a file of this test's.
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        workflow_address=address,
        scheduler_address=address,
        log_address=address,
        ai_address=address,
        tool_address=address,
        node_addresses=[address],
        grpc_deadline_s=5,
        max_body_bytes=64 * 1024,
        sse_heartbeat_s=0.05,
        http_port=0,
        # These tests exercise translation and errors over fakes: every caller is the admin
        # of the default tenant (tests/security covers authentication and roles).
        auth_enabled=False,
    )


@pytest.fixture
async def clients(settings: GatewaySettings) -> AsyncIterator[ServiceClients]:
    clients = ServiceClients.connect(settings)
    yield clients
    await clients.close()


@pytest.fixture
async def client(
    settings: GatewaySettings, clients: ServiceClients
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clients)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http
    finally:
        await app.state.security.close()


@pytest.fixture
async def live_gateway(settings: GatewaySettings, clients: ServiceClients) -> AsyncIterator[str]:
    """host:port of the gateway served by a real uvicorn on port 0."""
    server = GatewayServer(settings, clients)
    port = await server.start()
    assert port > 0
    yield f"127.0.0.1:{port}"
    await server.stop()


HELLO = {
    "name": "hello",
    "inputs": {"name": {"type": "string", "required": True}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "Hello {{ inputs.name }}"}},
    ],
    "edges": [{"source": "start", "target": "greet"}],
}


async def create_workflow(client: httpx.AsyncClient, definition: dict[str, Any] = HELLO) -> str:
    response = await client.post("/api/v1/workflows", json=definition)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def start_execution(client: httpx.AsyncClient, inputs: dict[str, Any] | None = None) -> str:
    workflow_id = await create_workflow(client)
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": inputs or {"name": "Ada"}}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])
