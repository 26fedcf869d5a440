"""heddle_sdk.AsyncClient and Client against a real embedded stack: workflows, executions
with idempotency keys, waiting, events resumed by seq after a dropped stream, human input,
control, retry, the catalog, and typed errors carrying the API's code and details."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from heddle_sdk import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    NotFound,
    Unauthenticated,
    Workflow,
)

from libs.cli.stack import Stack


def hello() -> Workflow:
    wf = Workflow("hello")
    name = wf.input("name", type="string", required=True)
    start = wf.node("input", id="start")
    greet = wf.node("template", id="greet", template=f"Hello, {name}!", after=start)
    wf.output("greeting", greet["text"])
    return wf


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(stack.gateway_url, stack.admin_key) as client:
        yield client


async def test_workflows_executions_and_idempotency(sdk: AsyncClient) -> None:
    created = await sdk.create_workflow(hello())
    assert (created.name, created.version) == ("hello", 1)
    changed = hello()
    changed.description = "second version"
    updated = await sdk.update_workflow(created.id, changed)
    assert updated.version == 2
    assert (await sdk.get_workflow(created.id, version=1)).version == 1
    assert created.id in {w.id for w in await sdk.list_workflows()}

    first = await sdk.execute(created.id, {"name": "Ada"}, idempotency_key="k-1")
    again = await sdk.execute(created.id, {"name": "Bob"}, idempotency_key="k-1")
    assert again.execution_id == first.execution_id
    assert (first.created, again.created) == (True, False)

    done = await sdk.wait(first.execution_id, timeout=20)
    assert done.status == "succeeded"
    assert done.outputs == {"greeting": "Hello, Ada!"}
    assert done.node("greet").status == "succeeded"

    sent: list[str] = []

    async def record(request: httpx.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    sdk.http.event_hooks["request"].append(record)
    ran = await sdk.run(created.id, {"name": "Cy"}, timeout=20)
    assert (ran.status, ran.outputs) == ("succeeded", {"greeting": "Hello, Cy!"})
    # The gateway's run-and-wait answered it: one request, no event stream.
    assert sent == [f"POST /api/v1/workflows/{created.id}/run"]
    sdk.http.event_hooks["request"].clear()
    with pytest.raises(NotFound):
        await sdk.run("0" * 32, timeout=5)

    await sdk.delete_workflow(created.id)
    with pytest.raises(NotFound) as missing:
        await sdk.get_workflow(created.id)
    assert missing.value.status == 404
    assert missing.value.code


async def test_events_resume_after_a_dropped_stream(stack: Stack, sdk: AsyncClient) -> None:
    workflow = await sdk.create_workflow(hello())
    started = await sdk.execute(workflow.id, {"name": "Ada"})
    await sdk.wait(started.execution_id, timeout=20)
    every = [event async for event in sdk.events(started.execution_id)]
    seqs = [event.seq for event in every]
    assert seqs == sorted(set(seqs)) and len(seqs) >= 4
    assert every[-1].type == "execution.completed"
    later = [event.seq async for event in sdk.events(started.execution_id, after=seqs[1])]
    assert later == seqs[2:]

    # A transport that cuts the first event stream after its first event.
    requests: list[httpx.URL] = []
    real = httpx.AsyncHTTPTransport()

    class Cutting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await real.handle_async_request(request)
            if not request.url.path.endswith("/events"):
                return response
            requests.append(request.url)
            if len(requests) > 1:
                return response

            async def first_event_then_drop() -> AsyncIterator[bytes]:
                buffered = b""
                async for chunk in response.aiter_raw():
                    buffered += chunk
                    if b"\nid:" in buffered or buffered.startswith(b"id:"):
                        end = buffered.find(b"\n\n", buffered.find(b"id:"))
                        if end >= 0:
                            yield buffered[: end + 2]
                            await response.aclose()
                            raise httpx.ReadError("connection dropped", request=request)
                raise AssertionError("the stream ended before its first event")

            return httpx.Response(
                response.status_code,
                headers=response.headers,
                content=first_event_then_drop(),
                request=request,
            )

    async with AsyncClient(stack.gateway_url, stack.admin_key, transport=Cutting()) as cut:
        resumed = [event.seq async for event in cut.events(started.execution_id)]
    assert resumed == seqs
    assert len(requests) >= 2
    assert requests[1].params.get("after") == str(seqs[0])


async def test_human_input_control_and_retry(sdk: AsyncClient) -> None:
    wf = Workflow("approve")
    ask = wf.node(
        "human_input",
        id="ask",
        prompt="ok?",
        schema={"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    )
    wf.output("ok", ask["data.ok"])
    approval = await sdk.create_workflow(wf)
    started = await sdk.execute(approval.id)
    async for event in sdk.events(started.execution_id):
        if event.type == "node.waiting":
            assert event.node_id == "ask"
            break
    await sdk.submit_input(started.execution_id, "ask", {"ok": True})
    assert (await sdk.wait(started.execution_id, timeout=20)).outputs == {"ok": True}

    slow = Workflow("slow")
    slow.node("delay", id="sleepy", seconds=30)
    slow_id = (await sdk.create_workflow(slow)).id
    paused_run = await sdk.execute(slow_id)
    assert (await sdk.pause(paused_run.execution_id)).status == "paused"
    assert (await sdk.resume(paused_run.execution_id)).status == "running"
    cancelled = await sdk.cancel(paused_run.execution_id)
    assert cancelled.status == "cancelled"
    with pytest.raises(Conflict) as again:
        await sdk.cancel(paused_run.execution_id)
    assert again.value.status == 409

    divide = Workflow("divide")
    d = divide.input("d", type="number", required=True)
    divide.node("transform", id="ratio", expression=f"10 / {d[3:-3].strip()}")
    divide_id = (await sdk.create_workflow(divide)).id
    failed = await sdk.run(divide_id, {"d": 0}, timeout=20)
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.message
    retried = await sdk.retry(failed.id)
    assert retried.execution_id != failed.id


async def test_typed_errors_and_the_catalog(stack: Stack, sdk: AsyncClient) -> None:
    with pytest.raises(BadRequest) as invalid:
        await sdk.create_workflow({"name": "bad", "nodes": [{"id": "x", "type": "no_such"}]})
    assert invalid.value.status in (400, 422)
    assert invalid.value.code
    assert "no_such" in str(invalid.value.details)

    report = await sdk.validate({"name": "bad", "nodes": [{"id": "x", "type": "no_such"}]})
    assert report.valid is False
    assert report.issues[0].node_id == "x"

    types = {t.type: t for t in await sdk.list_node_types()}
    assert {"noop", "template", "http_request"} <= set(types)
    assert types["template"].params_schema["type"] == "object"

    if stack.admin_key:  # authentication on: a wrong key is refused, typed
        async with AsyncClient(stack.gateway_url, "hk_wrong_key") as stranger:
            with pytest.raises(Unauthenticated) as refused:
                await stranger.list_workflows()
        assert refused.value.status == 401


async def test_a_loopback_client_without_key_takes_the_development_key(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEDDLE_API_KEY", raising=False)
    async with AsyncClient(stack.gateway_url) as keyless:
        assert isinstance(await keyless.list_workflows(), list)
        assert keyless.api_key == stack.admin_key


async def test_the_blocking_client(stack: Stack) -> None:
    def use_it() -> dict[str, Any]:
        with Client(stack.gateway_url, stack.admin_key) as client:
            workflow = client.create_workflow(hello())
            done = client.run(workflow.id, {"name": "Ada"}, idempotency_key="sync-1", timeout=20)
            events = [event.type for event in client.events(done.id)]
            with pytest.raises(NotFound):
                client.get_execution("0" * 32)
            return {"status": done.status, "outputs": done.outputs, "events": events}

    # The stack runs in this event loop: the blocking client must run elsewhere.
    result = await asyncio.to_thread(use_it)
    assert result["status"] == "succeeded"
    assert result["outputs"] == {"greeting": "Hello, Ada!"}
    assert result["events"][0] == "execution.started"
    assert result["events"][-1] == "execution.completed"
