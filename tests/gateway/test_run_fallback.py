"""POST /run against a workflow service without RunExecution (an older replica during a
rolling upgrade): the gateway starts with StartExecution and waits with WaitExecution."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from heddle.v1 import workflow_pb2, workflow_pb2_grpc

from tests.gateway.conftest import Fakes, create_workflow


@pytest.fixture(autouse=True)
def older_workflow_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake answers RunExecution as a service that does not know it (UNIMPLEMENTED)."""

    async def unknown(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield  # a server-streaming handler is an async generator

    # On the generated base the fake inherits from (conftest's class may be imported twice).
    monkeypatch.setattr(workflow_pb2_grpc.WorkflowServiceServicer, "RunExecution", unknown)


async def test_run_falls_back_to_start_and_wait(fakes: Fakes, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/run", json={"inputs": {"name": "Ada"}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["outputs"] == {"name": "Ada"}
    kinds = [type(request) for request in fakes.workflow.requests]
    assert kinds.count(workflow_pb2.StartExecutionRequest) == 1
    assert workflow_pb2.WaitExecutionRequest in kinds
