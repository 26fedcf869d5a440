"""A parked execution (unloaded while it waits, services/workflow/parking.py) on two replicas
of one database: the owner keeps it, input sent to both replicas at once resumes it once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from heddle.v1 import workflow_pb2, workflow_pb2_grpc

from libs.cli.stack import Stack, free_port
from libs.common import jsonutil
from libs.common.errors import FailedPrecondition, Unavailable, from_rpc_error
from libs.common.grpcutil import create_channel
from services.workflow.models import EventRow
from services.workflow.server import WorkflowService, serve
from services.workflow.settings import WorkflowSettings
from tests.helpers import assert_eventually

APPROVAL = {
    "name": "parked-approval",
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "ask", "type": "human_input", "params": {"prompt": "ok?"}},
        {"id": "done", "type": "output", "params": {"value": "{{ ask.data.n }}"}},
    ],
    "edges": [{"source": "start", "target": "ask"}, {"source": "ask", "target": "done"}],
}


@pytest.fixture
async def second_replica(stack: Stack) -> AsyncIterator[WorkflowService]:
    settings = WorkflowSettings(
        **{
            **stack.settings,
            "grpc_port": free_port(),
            "replica_id": "replica-two",
            # A forwarded call for an execution that ended meanwhile is not answered (the
            # owner no longer drives it): Unavailable, "try again", after this long.
            "forward_timeout_s": 2,
        }
    )
    service = await serve(settings)
    try:
        yield service
    finally:
        await service.stop()


async def test_input_sent_to_both_replicas_at_once_resumes_a_parked_execution_once(
    stack: Stack, second_replica: WorkflowService
) -> None:
    owner_engine = stack.services["workflow"].engine
    owner = workflow_pb2_grpc.WorkflowServiceStub(
        create_channel(stack.settings["workflow_address"])
    )
    other = workflow_pb2_grpc.WorkflowServiceStub(
        create_channel(f"127.0.0.1:{second_replica.port}")
    )
    workflow = await owner.CreateWorkflow(
        workflow_pb2.CreateWorkflowRequest(definition_json=jsonutil.dumps(APPROVAL)), timeout=10
    )
    started = await owner.StartExecution(
        workflow_pb2.StartExecutionRequest(workflow_id=workflow.id), timeout=10
    )
    execution_id = started.execution_id
    # Parked on the owner: no runner, only the record; the other replica holds nothing.
    await assert_eventually(
        lambda: execution_id in owner_engine.parking and execution_id not in owner_engine.runners,
        timeout=10,
    )
    assert execution_id not in second_replica.engine.runners
    assert execution_id not in second_replica.engine.parking

    async def submit(stub: workflow_pb2_grpc.WorkflowServiceStub, n: int) -> str:
        request = workflow_pb2.SubmitInputRequest(
            id=execution_id, node_id="ask", data_json=jsonutil.dumps({"n": n})
        )
        try:
            await stub.SubmitInput(request, timeout=20)
        except Exception as error:
            refused = from_rpc_error(error)
            # Not waiting any more (or, forwarded, "try again": a retry finds it ended).
            assert isinstance(refused, FailedPrecondition | Unavailable), refused
            return "refused"
        return "accepted"

    answers = await asyncio.gather(*(submit(stub, n) for n in range(3) for stub in (owner, other)))
    assert sorted(answers) == ["accepted"] + ["refused"] * 5, answers

    async def succeeded() -> bool:
        execution = await owner.GetExecution(
            workflow_pb2.GetExecutionRequest(id=execution_id), timeout=10
        )
        return execution.status == "succeeded"

    await assert_eventually(succeeded, timeout=10)
    # The owner resumed it; the other replica forwarded (it never loaded the execution).
    assert execution_id not in second_replica.engine.runners
    assert execution_id not in owner_engine.parking and execution_id not in owner_engine.runners
    async with owner_engine.sessions() as session:
        completions = [
            event.node_id
            for event in (await session.execute(EventRow.__table__.select())).all()
            if event.execution_id == execution_id and event.type == "node.completed"
        ]
    assert sorted(completions) == ["ask", "done", "start"]
