"""Two workflow replicas on one database: a control or input call that lands on the replica
that does not drive the execution is forwarded to the one that does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from heddle.v1 import workflow_pb2, workflow_pb2_grpc

from libs.cli.stack import Stack, free_port
from libs.common import jsonutil
from libs.common.errors import FailedPrecondition, InvalidArgument, from_rpc_error
from libs.common.grpcutil import create_channel
from services.workflow.server import WorkflowService, serve
from services.workflow.settings import WorkflowSettings
from tests.helpers import assert_eventually

WAITING = {
    "name": "approval",
    "nodes": [
        {"id": "slow", "type": "delay", "params": {"seconds": 30}},
        {
            "id": "ask",
            "type": "human_input",
            "params": {
                "prompt": "ok?",
                "schema": {
                    "type": "object",
                    "required": ["ok"],
                    "properties": {"ok": {"type": "boolean"}},
                },
            },
        },
    ],
    "edges": [],
}


@pytest.fixture
async def second_replica(stack: Stack) -> AsyncIterator[WorkflowService]:
    settings = WorkflowSettings(
        **{
            **stack.settings,
            "grpc_port": free_port(),
            "replica_id": "replica-two",
        }
    )
    service = await serve(settings)
    try:
        yield service
    finally:
        await service.stop()


async def _grpc_error(call):
    try:
        await call
    except Exception as error:
        return from_rpc_error(error)
    raise AssertionError("the call succeeded")


async def test_control_and_input_reach_the_owning_replica(
    stack: Stack, second_replica: WorkflowService
) -> None:
    owner = workflow_pb2_grpc.WorkflowServiceStub(
        create_channel(stack.settings["workflow_address"])
    )
    other = workflow_pb2_grpc.WorkflowServiceStub(
        create_channel(f"127.0.0.1:{second_replica.port}")
    )
    workflow = await owner.CreateWorkflow(
        workflow_pb2.CreateWorkflowRequest(definition_json=jsonutil.dumps(WAITING)), timeout=10
    )
    started = await owner.StartExecution(
        workflow_pb2.StartExecutionRequest(workflow_id=workflow.id), timeout=10
    )
    execution_id = started.execution_id

    async def waiting() -> bool:
        execution = await other.GetExecution(
            workflow_pb2.GetExecutionRequest(id=execution_id), timeout=10
        )
        return any(n.node_id == "ask" and n.status == "waiting" for n in execution.nodes)

    await assert_eventually(waiting, timeout=10)
    assert execution_id not in second_replica.engine.runners

    bad = await _grpc_error(
        other.SubmitInput(
            workflow_pb2.SubmitInputRequest(id=execution_id, node_id="ask", data_json=b'{"ok": 1}'),
            timeout=15,
        )
    )
    assert isinstance(bad, InvalidArgument)

    answered = await other.SubmitInput(
        workflow_pb2.SubmitInputRequest(id=execution_id, node_id="ask", data_json=b'{"ok": true}'),
        timeout=15,
    )
    assert {n.node_id: n.status for n in answered.nodes}["ask"] == "succeeded"

    cancelled = await other.ControlExecution(
        workflow_pb2.ControlExecutionRequest(
            id=execution_id, action=workflow_pb2.ControlExecutionRequest.CANCEL
        ),
        timeout=15,
    )
    assert cancelled.status == "cancelled"
    assert {n.node_id: n.status for n in cancelled.nodes}["slow"] == "cancelled"
    # The owner kept the execution: nothing was taken over by the forwarding replica.
    assert execution_id not in second_replica.engine.runners

    again = await _grpc_error(
        other.ControlExecution(
            workflow_pb2.ControlExecutionRequest(
                id=execution_id, action=workflow_pb2.ControlExecutionRequest.RESUME
            ),
            timeout=15,
        )
    )
    assert isinstance(again, FailedPrecondition)
