"""POST /api/v1/workflows/{id}/run: start, wait for the end, answer with the outcome (200),
or with the id when the wait runs out (202). The gateway chooses the execution's id, so a
call broken at any point is waited on, or started again, by it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from heddle.v1 import workflow_pb2, workflow_pb2_grpc
from sqlalchemy import func, select

from libs.cli.stack import Stack, start_stack
from libs.common import jsonutil
from libs.common.grpcutil import create_channel, start_grpc_server
from services.workflow.models import ExecutionRow
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
    workflow_id: str, inputs: bytes, started_after_s: float, key: str = "", execution_id: str = ""
) -> workflow_pb2.RunExecutionRequest:
    start = workflow_pb2.StartExecutionRequest(
        workflow_id=workflow_id,
        inputs_json=inputs,
        tenant_id="default",
        idempotency_key=key,
        execution_id=execution_id,
    )
    return workflow_pb2.RunExecutionRequest(start=start, wait_s=20, started_after_s=started_after_s)


@pytest.fixture
async def any_stack(database_url: str) -> AsyncIterator[Stack]:
    """The embedded stack on SQLite and on PostgreSQL (where a start's rows go in with its
    runner's first batch)."""
    running = await start_stack(
        {"database_url": database_url, "http_allow_hosts": ["127.0.0.1"]}, ephemeral_ports=True
    )
    try:
        yield running
    finally:
        await running.stop()


def _client_of(stack: Stack) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {stack.admin_key}"} if stack.admin_key else {}
    return httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=headers)


async def _executions(stack: Stack) -> int:
    """How many executions the database holds, of every tenant."""
    async with stack.services["workflow"].engine.sessions() as session:
        count: int = await session.scalar(select(func.count()).select_from(ExecutionRow))
    return count


async def _restart_grpc(stack: Stack, down_s: float) -> Any:
    """Stop the workflow service's gRPC server at once (its calls broken), and serve the same
    engine again on the same port down_s later: the replacement server."""
    service = stack.services["workflow"]
    engine = service.engine
    await service.grpc.stop(grace=0)
    await asyncio.sleep(down_s)
    servicer = WorkflowServicer(
        engine, WorkflowStore(engine.settings, engine.sessions, engine.catalog)
    )
    return await start_grpc_server(
        "workflow",
        [workflow_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name],
        lambda server: workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(servicer, server),
        port=service.grpc.port,
    )


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


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # as production runs
@pytest.mark.parametrize("broken_at", ["before the commit", 0.2, 1.5])
async def test_a_run_whose_call_breaks_still_answers_its_outputs(
    any_stack: Stack, monkeypatch: pytest.MonkeyPatch, broken_at: str | float
) -> None:
    """The workflow service's calls break (a replica restarting, a connection reset) at any
    point of a run: before its start committed (the start is sent again with its id), 0.2 s
    into it (within the 1 s the gateway once had to wait for the id: that answered 503) or
    later (the wait by id rides it). The answer is the run's outputs, and one execution
    exists."""
    engine = any_stack.services["workflow"].engine
    breaking: list[asyncio.Task[Any]] = []
    if broken_at == "before the commit":
        start_execution = engine.start_execution

        async def broken_before_commit(**start: Any) -> Any:
            if not breaking:  # the first start's call breaks before it writes anything
                breaking.append(asyncio.create_task(_restart_grpc(any_stack, 0.3)))
                await asyncio.Event().wait()  # cancelled by the server's stop
            return await start_execution(**start)

        monkeypatch.setattr(engine, "start_execution", broken_before_commit)
    async with _client_of(any_stack) as client:
        workflow_id = await create_workflow(client, SLOW)
        running = asyncio.create_task(
            client.post(f"/api/v1/workflows/{workflow_id}/run", params={"wait": 30})
        )
        if isinstance(broken_at, float):
            await assert_eventually(lambda: len(engine.runners) == 1, message="never started")
            await asyncio.sleep(broken_at)
            breaking.append(asyncio.create_task(_restart_grpc(any_stack, 0.3)))
        await assert_eventually(lambda: bool(breaking), message="the call never broke")
        replacement = await breaking[0]
        try:
            response = await running
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "succeeded"
            assert response.json()["outputs"] == {"done": "woke"}
            assert await _executions(any_stack) == 1
        finally:
            await replacement.stop(grace=0)


async def test_a_start_sent_again_with_its_id_answers_the_same_execution(
    any_stack: Stack,
) -> None:
    """A start names the id the execution takes; sent again with it (a running execution,
    held by its runner, or a finished one, only in the database), it answers that execution
    (created false) and writes nothing. RunExecutionOnce with a chosen id waits the whole
    wait: its caller knows the id, so no `started` comes before the end."""
    async with _client_of(any_stack) as client:
        workflow, quick, slow = await _stub_and_workflows(any_stack, client)
    slow_id, quick_id = str(uuid.uuid4()), str(uuid.uuid4())
    slow_start = _run_request(slow, b"{}", 0.3, execution_id=slow_id).start
    first = await workflow.StartExecution(slow_start, timeout=10)
    again = await workflow.StartExecution(slow_start, timeout=10)  # running, held here
    assert (first.execution_id, first.created) == (slow_id, True)
    assert (again.execution_id, again.created) == (slow_id, False)
    ran = await workflow.RunExecutionOnce(
        _run_request(quick, b'{"d": 4}', 0.3, execution_id=quick_id), timeout=30
    )
    assert ran.WhichOneof("reply") == "finished" and ran.finished.id == quick_id
    # The quick one ended (its runner gone): the repeat meets its row.
    repeat = await workflow.RunExecutionOnce(
        _run_request(quick, b'{"d": 4}', 0.3, execution_id=quick_id), timeout=30
    )
    assert repeat.WhichOneof("reply") == "started"
    assert (repeat.started.execution_id, repeat.started.created) == (quick_id, False)
    assert await _executions(any_stack) == 2
    # A slow run with a chosen id: `finished` alone, though it outlasts started_after_s.
    waited = await workflow.RunExecutionOnce(
        _run_request(slow, b"{}", 0.3, execution_id=str(uuid.uuid4())), timeout=30
    )
    assert waited.WhichOneof("reply") == "finished"
    assert waited.finished.status == "succeeded"


async def test_a_start_with_another_tenants_or_workflows_execution_id_is_refused(
    any_stack: Stack,
) -> None:
    """An id another tenant's execution (or another workflow's) has is refused with a
    conflict that names neither; nothing is written. A malformed id is an invalid argument
    that says which field and what it must be."""
    async with _client_of(any_stack) as client:
        workflow, quick, slow = await _stub_and_workflows(any_stack, client)
        taken = str(uuid.uuid4())
        await workflow.RunExecutionOnce(
            _run_request(quick, b'{"d": 4}', 0.3, execution_id=taken), timeout=30
        )
        other = await workflow.CreateWorkflow(
            workflow_pb2.CreateWorkflowRequest(
                tenant_id="other-tenant", definition_json=jsonutil.dumps(DIVIDE)
            ),
            timeout=10,
        )
        starts = [
            workflow_pb2.StartExecutionRequest(
                workflow_id=other.id, inputs_json=b'{"d": 4}', tenant_id="other-tenant"
            ),
            _run_request(slow, b"{}", 0.3).start,  # the same tenant, another workflow
        ]
        for start in starts:
            start.execution_id = taken
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await workflow.StartExecution(start, timeout=10)
            assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
            message = refused.value.details() or ""
            assert "taken" in message and quick not in message and "default" not in message
        assert await _executions(any_stack) == 1
        for malformed in ("not-a-uuid", taken.upper(), f"{{{taken}}}", "x" * 300):
            start = _run_request(quick, b'{"d": 4}', 0.3, execution_id=malformed).start
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await workflow.StartExecution(start, timeout=10)
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "execution_id must be a UUID" in (invalid.value.details() or "")
        assert await _executions(any_stack) == 1


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
