"""POST /execute and /run choose the execution's id, so a start whose call breaks (the
replica gone, a reset) is sent again with it: a repeat with the id answers the same
execution. A status the service chose (an invalid argument, a workflow not found) is not
sent again."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import httpx
import pytest
from grpc.aio import AioRpcError, Metadata
from heddle.v1 import workflow_pb2, workflow_pb2_grpc

from libs.common.errors import HeddleError, InvalidArgument, NotFound, Unavailable, error_trailer
from services.gateway.clients import ServiceClients
from services.gateway.routes.workflows import _RESENDS, _run_and_wait
from tests.gateway.conftest import Fakes, create_workflow
from tests.gateway.test_run_stream_end import _clients_of


def _failing_first(clients: ServiceClients, error: AioRpcError) -> list[str]:
    """The gateway's first StartExecution fails with `error` (a broken call, or the
    service's answer); every start's execution_id is recorded."""
    stub = clients.workflow
    start = stub.StartExecution
    ids: list[str] = []

    async def failing_first(request: Any, **kwargs: Any) -> Any:
        ids.append(request.execution_id)
        if len(ids) == 1:
            raise error
        return await start(request, **kwargs)

    stub.StartExecution = failing_first
    return ids


async def test_a_broken_start_is_sent_again_with_the_same_id(
    fakes: Fakes, clients: ServiceClients, client: httpx.AsyncClient
) -> None:
    reset = AioRpcError(grpc.StatusCode.INTERNAL, Metadata(), Metadata(), "RST_STREAM")
    ids = _failing_first(clients, reset)
    workflow_id = await create_workflow(client)
    response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert response.status_code == 202, response.text
    assert len(ids) == 2 and ids[0] == ids[1]
    assert str(uuid.UUID(ids[0])) == ids[0]  # a uuid the gateway chose
    another = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert another.status_code == 202, another.text
    assert len(ids) == 3 and ids[2] != ids[0]  # one per request


@pytest.mark.parametrize(
    ("refusal", "status"),
    [(InvalidArgument("bad inputs"), 422), (HeddleError("a bug of the service's"), 500)],
)
async def test_a_start_the_service_refused_is_not_sent_again(
    fakes: Fakes,
    clients: ServiceClients,
    client: httpx.AsyncClient,
    refusal: HeddleError,
    status: int,
) -> None:
    """Its error's trailer says the service chose the status (INTERNAL too)."""
    answered = AioRpcError(
        refusal.grpc_status, Metadata(), Metadata(*error_trailer(refusal)), refusal.message
    )
    ids = _failing_first(clients, answered)
    workflow_id = await create_workflow(client)
    response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert response.status_code == status, response.text
    assert len(ids) == 1


class _Broken(workflow_pb2_grpc.WorkflowServiceServicer):
    """RunExecutionOnce breaks (UNAVAILABLE, as a replica gone before the start committed)
    the first `breaks` times, then finishes the run; WaitExecution finds no execution until
    a run finished."""

    def __init__(self, breaks: int) -> None:
        self.breaks = breaks
        self.runs: list[str] = []
        self.waits = 0
        self.finished: set[str] = set()

    async def RunExecutionOnce(self, request: Any, context: Any) -> Any:
        self.runs.append(request.start.execution_id)
        if len(self.runs) <= self.breaks:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        if request.start.workflow_id == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "workflow 'missing' not found")
        self.finished.add(request.start.execution_id)
        return workflow_pb2.RunExecutionReply(
            finished=workflow_pb2.Execution(id=request.start.execution_id, status="succeeded")
        )

    async def WaitExecution(self, request: Any, context: Any) -> Any:
        self.waits += 1
        if request.id not in self.finished:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"execution {request.id!r} not found")
        return workflow_pb2.Execution(id=request.id, status="succeeded")


def _start(workflow_id: str = "w1") -> workflow_pb2.StartExecutionRequest:
    return workflow_pb2.StartExecutionRequest(
        workflow_id=workflow_id, tenant_id="default", execution_id=str(uuid.uuid4())
    )


async def test_a_run_broken_before_its_start_is_started_again_with_its_id() -> None:
    broken = _Broken(breaks=1)
    async with _clients_of(broken) as clients:
        start = _start()
        started, finished = await _run_and_wait(clients, start, "default", 10.0)
    assert started is None and finished is not None and finished.id == start.execution_id
    assert broken.runs == [start.execution_id, start.execution_id] and broken.waits == 1


async def test_a_run_whose_calls_keep_breaking_is_unavailable() -> None:
    broken = _Broken(breaks=100)
    async with _clients_of(broken) as clients:
        with pytest.raises(Unavailable):
            await _run_and_wait(clients, _start(), "default", 10.0)
    assert len(broken.runs) == 1 + _RESENDS


async def test_a_run_the_service_refused_is_not_started_again() -> None:
    broken = _Broken(breaks=0)
    async with _clients_of(broken) as clients:
        with pytest.raises(NotFound):
            await _run_and_wait(clients, _start("missing"), "default", 10.0)
    assert len(broken.runs) == 1 and broken.waits == 0
