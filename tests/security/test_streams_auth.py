"""The live event streams authenticate like the HTTP routes: the WebSocket answers a missing
or bad credential with an error frame and close code 4401; browsers may pass the credential
as ?access_token= (they cannot set headers on EventSource or WebSocket)."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from libs.cli.stack import Stack
from tests.security.support import create_workflow, new_key, wait_final


async def test_websocket_and_sse_need_a_credential(stack: Stack, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    started = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    execution_id = started.json()["execution_id"]
    await wait_final(client, execution_id)
    ws_url = stack.gateway_url.replace("http://", "ws://") + f"/ws/v1/executions/{execution_id}"

    for url in (ws_url, f"{ws_url}?access_token=hk_000000000000_{'x' * 43}"):
        async with connect(url) as websocket:
            frame = json.loads(await websocket.recv())
            assert frame["error"]["code"] == "unauthenticated"
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    async with connect(f"{ws_url}?access_token={stack.admin_key}") as websocket:
        first = json.loads(await websocket.recv())
        assert first["type"] == "execution.started"

    # A member without a role: the execution does not exist for them (4404).
    member, _ = await new_key(stack)
    async with connect(f"{ws_url}?access_token={member}") as websocket:
        assert json.loads(await websocket.recv())["error"]["code"] == "not_found"

    async with httpx.AsyncClient(base_url=stack.gateway_url) as http:
        events = f"/api/v1/executions/{execution_id}/events"
        assert (await http.get(events)).status_code == 401
        streamed = await http.get(events, params={"access_token": stack.admin_key})
        assert streamed.status_code == 200 and "execution.completed" in streamed.text
        # ?access_token= is for event streams only, not a way around headers elsewhere.
        listed = await http.get("/api/v1/workflows", params={"access_token": stack.admin_key})
        assert listed.status_code == 401
