"""POST /run's RunExecution stream is read to its last message and then let end by itself:
a call dropped before its trailers arrived was cancelled by grpc's Call.__del__ (a
RST_STREAM written and a cancellation status built per run, ~4 % of the gateway's CPU).
The service has sent its status by then, so only the client side can tell: Call._cancel."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio._call
import pytest
from heddle.v1 import workflow_pb2, workflow_pb2_grpc

from libs.common.grpcutil import start_grpc_server
from services.gateway.clients import _ENDING, ServiceClients
from services.gateway.routes.workflows import _STARTED_AFTER_S, _run_and_wait
from services.gateway.settings import GatewaySettings


class _Runs(workflow_pb2_grpc.WorkflowServiceServicer):
    async def RunExecution(self, request: Any, context: Any) -> Any:
        yield workflow_pb2.RunExecutionReply(
            started=workflow_pb2.StartExecutionResponse(execution_id="e1", status="running")
        )
        yield workflow_pb2.RunExecutionReply(
            finished=workflow_pb2.Execution(id="e1", status="succeeded")
        )


@contextlib.asynccontextmanager
async def _clients_of(
    servicer: workflow_pb2_grpc.WorkflowServiceServicer,
) -> AsyncIterator[ServiceClients]:
    """The gateway's clients of a WorkflowService served by `servicer` on port 0."""
    server = await start_grpc_server(
        "runs",
        ["heddle.v1.WorkflowService"],
        lambda grpc_server: workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(
            servicer, grpc_server
        ),
    )
    clients = ServiceClients.connect(
        GatewaySettings(workflow_address=f"127.0.0.1:{server.port}", grpc_deadline_s=5)
    )
    try:
        yield clients
    finally:
        await clients.close()
        await server.stop(grace=0)


async def test_a_finished_run_is_not_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    cancels: list[str] = []
    cancel = grpc.aio._call.Call._cancel
    gc.collect()  # calls other tests left behind are not counted

    def counted(call: Any, details: str) -> bool:
        if details == grpc.aio._call._GC_CANCELLATION_DETAILS:  # not an explicit cancel
            cancels.append(details)
        return cancel(call, details)

    monkeypatch.setattr(grpc.aio._call.Call, "_cancel", counted)
    async with _clients_of(_Runs()) as clients:
        for _ in range(5):
            start = workflow_pb2.StartExecutionRequest(workflow_id="w1", tenant_id="default")
            started, finished = await _run_and_wait(clients, start, "default", 10.0)
            assert started is not None and started.execution_id == "e1"
            assert finished is not None and finished.status == "succeeded"
        await asyncio.sleep(0.2)  # every call's status has arrived
        # The route holds no call any more: whatever is left of them goes now (one collection:
        # each takes ~1 s in a loaded suite's worker, one per run made this test 25 s long).
        gc.collect()
        assert cancels == []
        assert not _ENDING  # each left once its status arrived


class _Quick(workflow_pb2_grpc.WorkflowServiceServicer):
    """A run that ended within started_after_s: `finished` alone."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def RunExecution(self, request: Any, context: Any) -> Any:
        self.asked.append(request.started_after_s)
        yield workflow_pb2.RunExecutionReply(
            finished=workflow_pb2.Execution(id="e2", status="succeeded")
        )


async def test_a_run_that_ended_soon_is_answered_by_finished_alone() -> None:
    quick = _Quick()
    async with _clients_of(quick) as clients:
        start = workflow_pb2.StartExecutionRequest(workflow_id="w1", tenant_id="default")
        started, finished = await _run_and_wait(clients, start, "default", 10.0)
        assert started is None
        assert finished is not None and finished.id == "e2" and finished.status == "succeeded"
        assert quick.asked == [_STARTED_AFTER_S] and _STARTED_AFTER_S > 0
