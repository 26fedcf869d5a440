"""Event streams (SSE and WebSocket), and the gateway served by a real uvicorn on port 0."""

from __future__ import annotations

import asyncio
import json
import uuid
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.gateway.server import GatewayServer
from services.gateway.settings import GatewaySettings
from services.gateway.streams import newly_listed
from tests.gateway.conftest import Fakes, start_execution

EVENT_KEYS = {"execution_id", "seq", "type", "node_id", "ts", "data", "trace_id"}


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The frames of an SSE body: each a dict of its fields (comments under ':')."""
    frames = []
    for block in text.split("\n\n"):
        if not block:
            continue
        frame: dict[str, Any] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            frame[field] = value.removeprefix(" ")
        frames.append(frame)
    return frames


async def test_sse_replays_every_event_from_the_first(client: httpx.AsyncClient) -> None:
    execution_id = await start_execution(client)
    response = await client.get(f"/api/v1/executions/{execution_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    frames = parse_sse(response.text)
    assert frames[0] == {"retry": "2000"}
    events = frames[1:]
    assert [f["id"] for f in events] == ["1", "2", "3", "4", "5", "6"]
    assert [f["event"] for f in events] == [
        "execution.started",
        "node.started",
        "node.completed",
        "node.started",
        "node.completed",
        "execution.completed",
    ]
    payload = json.loads(events[2]["data"])
    assert set(payload) == EVENT_KEYS
    assert payload == {
        "execution_id": execution_id,
        "seq": 3,
        "type": "node.completed",
        "node_id": "start",
        "ts": "2025-01-02T03:04:05Z",
        "data": {"output": {"x": 1}},
        "trace_id": "ab" * 16,
    }
    assert json.loads(events[0]["data"])["node_id"] is None


async def test_sse_resumes_after_seq_or_last_event_id(client: httpx.AsyncClient) -> None:
    execution_id = await start_execution(client)
    url = f"/api/v1/executions/{execution_id}/events"
    # Event frames only: a slow run may also carry a `: ping` comment frame.
    after = [f for f in parse_sse((await client.get(url, params={"after": 4})).text) if "id" in f]
    assert [f["id"] for f in after] == ["5", "6"]
    # A reconnecting browser sends Last-Event-ID, which wins over the original ?after=.
    resumed = await client.get(url, params={"after": 1}, headers={"Last-Event-ID": "5"})
    assert [f["id"] for f in parse_sse(resumed.text) if "id" in f] == ["6"]
    # Nothing after the resume point of an ended execution: 204 stops EventSource retries.
    done = await client.get(url, headers={"Last-Event-ID": "6"})
    assert done.status_code == 204
    assert (await client.get(url, params={"after": -1})).status_code == 422


async def test_real_server_streams_live_events_with_heartbeats(
    live_gateway: str, fakes: Fakes
) -> None:
    fakes.workflow.auto_complete = False
    async with httpx.AsyncClient(base_url=f"http://{live_gateway}", timeout=5) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        execution_id = await start_execution(http)
        received = ""
        async with http.stream("GET", f"/api/v1/executions/{execution_id}/events") as response:
            assert response.status_code == 200
            chunks = response.aiter_text()
            while "id: 1\n" not in received:
                received += await anext(chunks)
            while ": ping" not in received:  # idle: a heartbeat every sse_heartbeat_s
                received += await anext(chunks)
            await fakes.workflow.emit(execution_id, "node.waiting", "ask", {"prompt": "ok?"})
            while "event: node.waiting" not in received:
                received += await anext(chunks)
            await fakes.workflow.finish(execution_id, "failed")
            async for chunk in chunks:  # the stream ends when the service ends it
                received += chunk
        assert "event: execution.failed" in received


async def test_client_disconnect_cancels_the_upstream_stream(
    live_gateway: str, fakes: Fakes
) -> None:
    fakes.workflow.auto_complete = False
    async with httpx.AsyncClient(base_url=f"http://{live_gateway}", timeout=5) as http:
        execution_id = await start_execution(http)
        async with http.stream("GET", f"/api/v1/executions/{execution_id}/events") as response:
            # Up to the first event, so the upstream stream runs (the `retry:` line alone may
            # come before the gateway's call even reached the workflow service).
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    break
    await asyncio.wait_for(fakes.workflow.stream_cancelled.wait(), timeout=5)


async def test_websocket_streams_the_same_events(live_gateway: str, fakes: Fakes) -> None:
    fakes.workflow.auto_complete = False
    async with httpx.AsyncClient(base_url=f"http://{live_gateway}") as http:
        execution_id = await start_execution(http)
    url = f"ws://{live_gateway}/ws/v1/executions/{execution_id}"
    async with connect(url) as websocket:
        first = json.loads(await websocket.recv())
        assert set(first) == EVENT_KEYS
        assert (first["seq"], first["type"]) == (1, "execution.started")
        await fakes.workflow.emit(execution_id, "node.started", "a")
        assert json.loads(await websocket.recv())["seq"] == 2
        await fakes.workflow.finish(execution_id, "succeeded")
        assert json.loads(await websocket.recv())["type"] == "execution.completed"
        with pytest.raises(ConnectionClosed) as closed:
            await websocket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000

    async with connect(f"{url}?after=2") as websocket:
        assert json.loads(await websocket.recv())["seq"] == 3


async def test_websocket_unknown_execution(live_gateway: str) -> None:
    url = f"ws://{live_gateway}/ws/v1/executions/{uuid.uuid4()}"
    async with connect(url) as websocket:
        error = json.loads(await websocket.recv())
        assert error["error"]["code"] == "not_found"
        with pytest.raises(ConnectionClosed) as closed:
            await websocket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


async def test_websocket_client_leaving_cancels_the_upstream_stream(
    live_gateway: str, fakes: Fakes
) -> None:
    fakes.workflow.auto_complete = False
    async with httpx.AsyncClient(base_url=f"http://{live_gateway}") as http:
        execution_id = await start_execution(http)
    async with connect(f"ws://{live_gateway}/ws/v1/executions/{execution_id}") as websocket:
        await websocket.recv()
    await asyncio.wait_for(fakes.workflow.stream_cancelled.wait(), timeout=5)


async def test_server_refuses_a_taken_port(settings: GatewaySettings, live_gateway: str) -> None:
    taken = settings.model_copy(update={"http_port": int(live_gateway.rsplit(":", 1)[1])})
    server = GatewayServer(taken)
    with pytest.raises(OSError):
        await server.start()
    await server.stop()


def test_a_workflow_watch_holds_only_the_ids_of_its_last_listing() -> None:
    """A watch over 1,000 executions (10 listings of 100, newest first) keeps 100 ids, not
    1,000; each execution is new exactly once."""
    seen: set[str] = set()
    announced: list[str] = []
    for page in range(10):
        # Each listing: 50 new executions on top, 50 of the previous listing below them.
        ids = [f"x{n}" for n in range(page * 50 + 99, page * 50 - 1, -1) if n >= 0][:100]
        fresh, seen = newly_listed([SimpleNamespace(id=i) for i in ids], seen)
        announced += [execution.id for execution in fresh]
        assert len(seen) <= 100
    assert len(announced) == len(set(announced)) == 550
