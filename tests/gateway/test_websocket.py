"""The interactive WebSocket (/ws/v1/stream, and client messages on /ws/v1/executions/{id})
on the embedded stack: every client message, each answered with an ack or an error frame;
bad frames leave the socket open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

from libs.cli.stack import Stack
from services.gateway.auth import ADMIN_SCOPES
from tests.gateway.conftest import Fakes, start_execution
from tests.helpers import assert_eventually
from tests.security.support import new_key

pytestmark = pytest.mark.integration

NOOP = {"name": "quick", "nodes": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop"}]}
SLOW = {"name": "slow", "nodes": [{"id": "nap", "type": "delay", "params": {"seconds": 30}}]}
ASK = {
    "name": "ask",
    "nodes": [
        {
            "id": "approve",
            "type": "human_input",
            "params": {
                "prompt": "ok?",
                "schema": {
                    "type": "object",
                    "properties": {"approved": {"type": "boolean"}},
                    "required": ["approved"],
                },
            },
        },
        {"id": "done", "type": "output", "params": {"value": "{{ approve.data.approved }}"}},
    ],
    "edges": [{"source": "approve", "target": "done"}],
}


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.admin_key}"} if stack.admin_key else {}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=headers) as http:
        yield http


def ws_url(stack: Stack, path: str = "/ws/v1/stream", token: str | None = None) -> str:
    key = token if token is not None else stack.admin_key
    return stack.gateway_url.replace("http://", "ws://") + f"{path}?access_token={key}"


async def create(api: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    response = await api.post("/api/v1/workflows", json=definition)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def start(api: httpx.AsyncClient, workflow_id: str) -> str:
    response = await api.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


async def request(ws: ClientConnection, frame: dict[str, Any] | str) -> dict[str, Any]:
    """Send a frame; the ack or error answering it (events met on the way are kept)."""
    frame_id = frame.get("id") if isinstance(frame, dict) else None
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if reply.get("type") in ("ack", "error") and reply.get("id") == frame_id:
            return dict(reply)
        PENDING.setdefault(id(ws), []).append(reply)


PENDING: dict[int, list[dict[str, Any]]] = {}


async def until(
    ws: ClientConnection,
    done: Any,
    timeout: float = 20,  # noqa: ASYNC109 - a budget for the frames, not a cancellation scope
) -> list[dict[str, Any]]:
    """Frames (those already received first) until done(frames) is true; fails on timeout."""
    frames = PENDING.pop(id(ws), [])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(frames):
        remaining = deadline - loop.time()
        assert remaining > 0, f"not done within {timeout}s: {frames}"
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), remaining)))
    return frames


def finished(*execution_ids: str) -> Any:
    def check(frames: list[dict[str, Any]]) -> bool:
        ended = {
            f["execution_id"]
            for f in frames
            if f.get("type") in ("execution.completed", "execution.failed", "execution.cancelled")
        }
        return set(execution_ids) <= ended

    return check


async def test_subscribe_several_executions_and_unsubscribe(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    workflow_id = await create(api, NOOP)
    first, second = await start(api, workflow_id), await start(api, workflow_id)
    async with connect(ws_url(stack)) as ws:
        for n, execution_id in enumerate((first, second)):
            ack = await request(ws, {"type": "subscribe", "execution_id": execution_id, "id": n})
            assert ack == {
                "type": "ack",
                "request": "subscribe",
                "id": n,
                "execution_id": execution_id,
            }
        frames = await until(ws, lambda fs: sum(f.get("type") == "unsubscribed" for f in fs) >= 2)
        assert finished(first, second)(frames)
        for execution_id in (first, second):
            mine = [f for f in frames if f.get("execution_id") == execution_id and "seq" in f]
            assert [f["seq"] for f in mine] == list(range(1, len(mine) + 1))  # from the first
            assert mine[0]["type"] == "execution.started"
        ended = [f for f in frames if f.get("type") == "unsubscribed"]
        assert {f["execution_id"] for f in ended} == {first, second}
        assert {f["reason"] for f in ended} == {"ended"}

        # Resume from a sequence number; then unsubscribe (and again: an error).
        slow = await start(api, await create(api, SLOW))
        ack = await request(ws, {"type": "subscribe", "execution_id": slow, "after": 0, "id": "s"})
        assert ack["type"] == "ack"
        await until(ws, lambda fs: any(f.get("type") == "node.started" for f in fs))
        ack = await request(ws, {"type": "unsubscribe", "execution_id": slow, "id": "u"})
        assert ack == {"type": "ack", "request": "unsubscribe", "id": "u", "execution_id": slow}
        error = await request(ws, {"type": "unsubscribe", "execution_id": slow, "id": "u2"})
        assert error["type"] == "error" and error["error"]["code"] == "invalid_argument"
        await api.post(f"/api/v1/executions/{slow}/cancel")


async def test_execute_workflow_starts_and_follows(stack: Stack, api: httpx.AsyncClient) -> None:
    workflow_id = await create(api, NOOP)
    async with connect(ws_url(stack)) as ws:
        ack = await request(
            ws, {"type": "execute_workflow", "workflow_id": workflow_id, "inputs": {}, "id": 1}
        )
        assert ack["type"] == "ack" and ack["request"] == "execute_workflow"
        execution_id = ack["execution_id"]
        frames = await until(
            ws,
            lambda fs: any(
                f.get("type") == "unsubscribed" and f["execution_id"] == execution_id for f in fs
            ),
        )
        types = [f["type"] for f in frames if f.get("execution_id") == execution_id]
        assert types[0] == "execution.started" and "execution.completed" in types
        assert types[-1] == "unsubscribed"
    execution = (await api.get(f"/api/v1/executions/{execution_id}")).json()
    assert execution["status"] == "succeeded"


async def test_send_input_answers_a_waiting_node(stack: Stack, api: httpx.AsyncClient) -> None:
    workflow_id = await create(api, ASK)
    async with connect(ws_url(stack)) as ws:
        ack = await request(ws, {"type": "execute_workflow", "workflow_id": workflow_id, "id": 1})
        execution_id = ack["execution_id"]
        await until(ws, lambda fs: any(f.get("type") == "node.waiting" for f in fs))
        bad = await request(
            ws,
            {
                "type": "send_input",
                "execution_id": execution_id,
                "node_id": "approve",
                "data": {"approved": "yes"},
                "id": 2,
            },
        )
        assert bad["type"] == "error", bad  # the node's schema refuses it
        ack = await request(
            ws,
            {
                "type": "send_input",
                "execution_id": execution_id,
                "node_id": "approve",
                "data": {"approved": True},
                "id": 3,
            },
        )
        assert ack["type"] == "ack" and ack["execution_id"] == execution_id, ack
        frames = await until(ws, finished(execution_id))
        assert any(f.get("type") == "execution.completed" for f in frames)
    execution = (await api.get(f"/api/v1/executions/{execution_id}")).json()
    assert execution["status"] == "succeeded" and execution["outputs"]


async def test_cancel_stops_an_execution(stack: Stack, api: httpx.AsyncClient) -> None:
    workflow_id = await create(api, SLOW)
    async with connect(ws_url(stack)) as ws:
        ack = await request(ws, {"type": "execute_workflow", "workflow_id": workflow_id, "id": 1})
        execution_id = ack["execution_id"]
        await until(ws, lambda fs: any(f.get("type") == "node.started" for f in fs))
        ack = await request(ws, {"type": "cancel", "execution_id": execution_id, "id": 2})
        assert ack["type"] == "ack" and ack["request"] == "cancel", ack
        frames = await until(ws, finished(execution_id))
        assert any(f.get("type") == "execution.cancelled" for f in frames)


async def test_workflow_subscription_follows_new_executions(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    workflow_id = await create(api, NOOP)
    earlier = await start(api, workflow_id)
    async with connect(ws_url(stack)) as ws:
        # Wait for the earlier one to end: an ended execution is not replayed.
        async def earlier_ended() -> bool:
            response = await api.get(f"/api/v1/executions/{earlier}")
            return bool(response.json()["status"] == "succeeded")

        await assert_eventually(earlier_ended, timeout=30, message=f"{earlier} did not end")
        ack = await request(ws, {"type": "subscribe", "workflow_id": workflow_id, "id": "w"})
        assert ack == {"type": "ack", "request": "subscribe", "id": "w", "workflow_id": workflow_id}
        first, second = await start(api, workflow_id), await start(api, workflow_id)
        frames = await until(ws, finished(first, second))
        assert earlier not in {f.get("execution_id") for f in frames}
        ack = await request(ws, {"type": "unsubscribe", "workflow_id": workflow_id, "id": "x"})
        assert ack["type"] == "ack"


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    workflow_id = await create(api, NOOP)
    execution_id = await start(api, workflow_id)
    other_token, _ = await new_key(stack, tenant="other", scopes=ADMIN_SCOPES, name="other")
    async with connect(ws_url(stack, token=other_token)) as ws:
        for frame, code in (
            ("{not json", "invalid_argument"),
            ("[1, 2]", "invalid_argument"),
            (json.dumps({"type": "dance"}), "invalid_argument"),
            (json.dumps({"type": "subscribe"}), "invalid_argument"),
            (json.dumps({"type": "subscribe", "execution_id": "nope"}), "not_found"),
            # Another tenant's execution and workflow: not found, as if they did not exist.
            (json.dumps({"type": "subscribe", "execution_id": execution_id}), "not_found"),
            (json.dumps({"type": "cancel", "execution_id": execution_id}), "not_found"),
            (
                json.dumps(
                    {"type": "send_input", "execution_id": execution_id, "node_id": "a", "data": 1}
                ),
                "not_found",
            ),
            (json.dumps({"type": "execute_workflow", "workflow_id": workflow_id}), "not_found"),
            (json.dumps({"type": "subscribe", "workflow_id": workflow_id}), "not_found"),
        ):
            error = await request(ws, frame)
            assert error["type"] == "error", (frame, error)
            assert error["error"]["code"] == code, (frame, error)
            assert error["error"]["message"]
        unknown = await request(ws, {"type": "dance", "id": 9})
        assert unknown["id"] == 9 and "subscribe" in unknown["error"]["details"]["types"]
        assert (await request(ws, {"type": "ping", "id": "p"}))["type"] == "ack"
    # The other tenant's execution ran on untouched.
    execution = (await api.get(f"/api/v1/executions/{execution_id}")).json()
    assert execution["status"] in ("running", "pending", "succeeded")


async def test_execution_route_takes_client_messages_too(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    # SLOW cannot end by itself within the test: only the cancel ends it. The cancel's ack
    # and the stream's end race; the ack must come whichever wins.
    execution_id = await start(api, await create(api, SLOW))
    path = f"/ws/v1/executions/{execution_id}"
    async with connect(ws_url(stack, path)) as ws:
        error = await request(ws, "nonsense")
        assert error["type"] == "error"
        ack = await request(ws, {"type": "cancel", "execution_id": execution_id, "id": 1})
        assert ack["type"] == "ack"
        frames = await until(ws, finished(execution_id))
        assert frames[0]["type"] == "execution.started"
        await _closed_normally(ws)


async def _closed_normally(ws: ClientConnection) -> None:
    """The route closes the socket (1000) once its execution's stream has ended."""
    with pytest.raises(ConnectionClosedOK):
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert frame.get("type") not in ("ack", "error"), frame
    assert ws.close_code == 1000


async def test_execution_route_answers_the_cancel_that_ends_its_stream(
    live_gateway: str, fakes: Fakes
) -> None:
    """The stream's end (and so the route's close) comes before the cancel's reply: the
    reply is held back here, deterministically; the ack still goes out before the close."""
    fakes.workflow.auto_complete = False
    finish = fakes.workflow.finish
    lagging = asyncio.Event()

    async def finish_then_lag(execution_id: str, status: str, outputs: Any = None) -> None:
        await finish(execution_id, status, outputs)  # the stream ends here
        lagging.set()
        await asyncio.sleep(0.5)  # ... and the cancel's reply leaves only now

    fakes.workflow.finish = finish_then_lag  # type: ignore[method-assign]
    async with httpx.AsyncClient(base_url=f"http://{live_gateway}", timeout=10) as http:
        execution_id = await start_execution(http)
    async with connect(f"ws://{live_gateway}/ws/v1/executions/{execution_id}") as ws:
        await until(ws, lambda fs: any(f.get("type") == "execution.started" for f in fs))
        ack = await request(ws, {"type": "cancel", "execution_id": execution_id, "id": 7})
        assert lagging.is_set()
        assert ack == {
            "type": "ack",
            "request": "cancel",
            "id": 7,
            "execution_id": execution_id,
            "status": "cancelled",
        }
        frames = await until(ws, finished(execution_id))
        assert [f["type"] for f in frames][-1] == "execution.cancelled"
        await _closed_normally(ws)
