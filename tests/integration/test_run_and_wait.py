"""POST /api/v1/workflows/{id}/run: start, wait for the end, answer with the outcome (200),
or with the id when the wait runs out (202)."""

from __future__ import annotations

import asyncio

import httpx
from heddle.v1 import workflow_pb2, workflow_pb2_grpc

from libs.cli.stack import Stack
from libs.common.grpcutil import create_channel, start_grpc_server
from services.gateway.routes.workflows import _STARTED_AFTER_S
from services.workflow.servicer import WorkflowServicer
from services.workflow.workflows import WorkflowStore
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, get_execution, wait_final

DIVIDE = {
    "name": "divide",
    "inputs": {"d": {"type": "number", "required": True}},
    "nodes": [
        {"id": "start", "type": "input"},
        {
            "id": "ratio",
            "type": "code",
            "params": {"source": "result = 10 / inputs['inputs']['d']"},
        },
        {"id": "done", "type": "output", "params": {"value": {"ratio": "{{ ratio.result }}"}}},
    ],
    "edges": [{"source": "start", "target": "ratio"}, {"source": "ratio", "target": "done"}],
}

SLOW = {
    "name": "slow",
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "sleepy", "type": "delay", "params": {"seconds": 2.5}},
        {"id": "done", "type": "output", "params": {"value": "woke"}},
    ],
    "edges": [{"source": "start", "target": "sleepy"}, {"source": "sleepy", "target": "done"}],
}


async def _stub_and_workflows(
    stack: Stack, client: httpx.AsyncClient
) -> tuple[workflow_pb2_grpc.WorkflowServiceStub, str, str]:
    """A stub of the stack's workflow service, a quick workflow's id and a slow one's."""
    workflow = workflow_pb2_grpc.WorkflowServiceStub(
        create_channel(stack.settings["workflow_address"])
    )
    return workflow, await create_workflow(client, DIVIDE), await create_workflow(client, SLOW)


def _run_request(
    workflow_id: str, inputs: bytes, started_after_s: float, key: str = ""
) -> workflow_pb2.RunExecutionRequest:
    start = workflow_pb2.StartExecutionRequest(
        workflow_id=workflow_id, inputs_json=inputs, tenant_id="default", idempotency_key=key
    )
    return workflow_pb2.RunExecutionRequest(start=start, wait_s=20, started_after_s=started_after_s)


async def test_run_answers_with_the_outputs_when_the_execution_ends(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client, DIVIDE)
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/run", params={"wait": 20}, json={"inputs": {"d": 4}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["outputs"] == {"ratio": 2.5}
    assert body["workflow_id"] == workflow_id
    assert body["nodes"] == []  # the summary: GET the execution for the node records
    stored = await get_execution(client, body["id"])
    assert stored["status"] == "succeeded" and stored["outputs"] == {"ratio": 2.5}


async def test_run_of_a_failing_execution_answers_with_its_error(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client, DIVIDE)
    response = await client.post(f"/api/v1/workflows/{workflow_id}/run", json={"inputs": {"d": 0}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "failed"
    assert body["error"] is not None
    assert "division by zero" in body["error"]["message"]


async def test_run_answers_202_with_the_id_when_the_wait_runs_out(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client, SLOW)
    response = await client.post(f"/api/v1/workflows/{workflow_id}/run", params={"wait": 0.2})
    assert response.status_code == 202, response.text
    body = response.json()
    execution_id = body["execution_id"]
    assert body["created"] is True
    assert response.headers["location"] == f"/api/v1/executions/{execution_id}"
    # It went on running: the wait running out cancels nothing.
    finished = await wait_final(client, execution_id)
    assert finished["status"] == "succeeded"
    assert finished["outputs"] == {"done": "woke"}


async def test_run_with_an_idempotency_key_answers_with_the_same_execution(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client, DIVIDE)
    path = f"/api/v1/workflows/{workflow_id}/run"
    first = await client.post(path, json={"inputs": {"d": 5}}, headers={"Idempotency-Key": "k1"})
    again = await client.post(path, json={"inputs": {"d": 5}}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["id"] == again.json()["id"]
    assert again.json()["outputs"] == {"ratio": 2.0}


async def test_run_refuses_a_wait_out_of_range_and_an_unknown_workflow(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client, DIVIDE)
    for wait in (0, -1, 301):
        response = await client.post(
            f"/api/v1/workflows/{workflow_id}/run", params={"wait": wait}, json={}
        )
        assert response.status_code == 422, (wait, response.text)
    missing = await client.post("/api/v1/workflows/wf_doesnotexist/run", json={})
    assert missing.status_code == 404, missing.text


async def test_run_waits_on_when_the_workflow_service_connection_goes_away(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """The wait is a read: a connection dropped under it (a replica restarting, the
    channel's maximum connection age) makes the gateway wait again, not answer 503."""
    workflow_id = await create_workflow(client, SLOW)
    running = asyncio.create_task(
        client.post(f"/api/v1/workflows/{workflow_id}/run", params={"wait": 30})
    )
    service = stack.services["workflow"]
    engine = service.engine
    await assert_eventually(lambda: len(engine.runners) == 1, message="never started")
    # The gateway has the id (RunExecution's `started`, sent once the run went on for
    # _STARTED_AFTER_S) and its WaitExecution is in flight now.
    await asyncio.sleep(0.2 + _STARTED_AFTER_S)
    await service.grpc.stop(grace=0)
    await asyncio.sleep(0.3)
    servicer = WorkflowServicer(
        engine, WorkflowStore(engine.settings, engine.sessions, engine.catalog)
    )
    replacement = await start_grpc_server(
        "workflow",
        [workflow_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name],
        lambda server: workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(servicer, server),
        port=service.grpc.port,
    )
    try:
        response = await running
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "succeeded"
        assert response.json()["outputs"] == {"done": "woke"}
    finally:
        await replacement.stop(grace=0)


async def test_run_execution_sends_started_only_for_a_run_that_goes_on(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """With started_after_s, a run that ends sooner is one message (`finished`); one that
    goes on gets `started` (its id) first; without it, or for a start its idempotency key
    found, `started` comes at once."""
    workflow, quick, slow = await _stub_and_workflows(stack, client)

    async def replies(
        workflow_id: str, inputs: bytes, started_after_s: float, key: str = ""
    ) -> list[str]:
        request = _run_request(workflow_id, inputs, started_after_s, key)
        kinds = []
        async for reply in workflow.RunExecution(request, timeout=30):
            kinds.append(reply.WhichOneof("reply"))
            if reply.HasField("finished"):
                assert reply.finished.status == "succeeded", reply.finished
        return kinds

    assert await replies(quick, b'{"d": 4}', 10.0) == ["finished"]
    assert await replies(quick, b'{"d": 4}', 0.0) == ["started", "finished"]
    assert await replies(slow, b"{}", 0.3) == ["started", "finished"]
    # A start an idempotency key found (perhaps driven elsewhere): `started` at once.
    assert await replies(quick, b'{"d": 4}', 10.0, key="k-quiet") == ["finished"]
    assert await replies(quick, b'{"d": 4}', 10.0, key="k-quiet") == ["started", "finished"]


async def test_run_execution_once_answers_finished_or_started(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    """RunExecutionOnce (POST /run's unary call): `finished` for a run that ends within
    started_after_s, `started` (the id, the run going on) for one that does not, and
    `started` at once for a start its idempotency key found."""
    workflow, quick, slow = await _stub_and_workflows(stack, client)

    async def reply(
        workflow_id: str, inputs: bytes, started_after_s: float, key: str = ""
    ) -> workflow_pb2.RunExecutionReply:
        request = _run_request(workflow_id, inputs, started_after_s, key)
        answer: workflow_pb2.RunExecutionReply = await workflow.RunExecutionOnce(
            request, timeout=30
        )
        return answer

    done = await reply(quick, b'{"d": 4}', 10.0)
    assert done.WhichOneof("reply") == "finished"
    assert (done.finished.status, done.finished.outputs_json) == ("succeeded", b'{"ratio":2.5}')
    going_on = await reply(slow, b"{}", 0.3)
    assert going_on.WhichOneof("reply") == "started"
    assert going_on.started.created
    final = await wait_final(client, going_on.started.execution_id)
    assert final["status"] == "succeeded"
    first = await reply(quick, b'{"d": 4}', 10.0, key="k-once")
    assert first.WhichOneof("reply") == "finished"
    found = await reply(quick, b'{"d": 4}', 10.0, key="k-once")
    assert found.WhichOneof("reply") == "started"
    assert (found.started.execution_id, found.started.created) == (first.finished.id, False)
