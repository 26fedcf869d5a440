"""Helpers of the integration suites: drive workflows through the gateway's HTTP API, and a
local HTTP server that tests script per path (fail N times, sleep, answer JSON, count calls).

Use the server fixture in a test module with ``http_server = helpers.http_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.helpers import assert_eventually

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


# ---------------------------------------------------------------------------- the HTTP API


async def create_workflow(client: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    """Create a workflow; its id."""
    response = await client.post("/api/v1/workflows", json=definition)
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


async def run(
    client: httpx.AsyncClient,
    workflow_id: str,
    inputs: dict[str, Any] | None = None,
    key: str | None = None,
) -> str:
    """Start an execution; its id."""
    body: dict[str, Any] = {"inputs": inputs or {}}
    if key is not None:
        body["idempotency_key"] = key
    response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json=body)
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def get_execution(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/executions/{execution_id}")
    assert response.status_code == 200, response.text
    execution: dict[str, Any] = response.json()
    return execution


async def wait_final(
    client: httpx.AsyncClient,
    execution_id: str,
    timeout: float = 20.0,  # noqa: ASYNC109 - a budget for the whole wait
) -> dict[str, Any]:
    """Follow the execution's SSE stream until it ends (the execution is final); the detail."""
    async with asyncio.timeout(timeout):
        while True:
            async with client.stream("GET", f"/api/v1/executions/{execution_id}/events") as stream:
                assert stream.status_code in (200, 204), await stream.aread()
                async for _ in stream.aiter_lines():
                    pass
            execution = await get_execution(client, execution_id)
            if execution["status"] in FINAL_STATUSES:
                return execution
            # A stream may end early (its own deadline); follow it again.
            await asyncio.sleep(0.05)


async def wait_status(
    client: httpx.AsyncClient,
    execution_id: str,
    status: str,
    node_id: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - a polling budget
) -> dict[str, Any]:
    """Poll until the execution (or one of its nodes) has status; the execution detail."""
    latest: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal latest
        latest = await get_execution(client, execution_id)
        if node_id is None:
            return bool(latest["status"] == status)
        return bool(node(latest, node_id)["status"] == status)

    await assert_eventually(
        reached,
        timeout=timeout,
        message=f"{node_id or 'execution'} never became {status!r}",
    )
    return latest


def node(execution: dict[str, Any], node_id: str) -> dict[str, Any]:
    """One node run of an execution detail."""
    for entry in execution["nodes"]:
        if entry["node_id"] == node_id:
            found: dict[str, Any] = entry
            return found
    raise AssertionError(f"no node {node_id!r} in {[n['node_id'] for n in execution['nodes']]}")


def statuses(execution: dict[str, Any]) -> dict[str, str]:
    """node_id -> status."""
    return {entry["node_id"]: entry["status"] for entry in execution["nodes"]}


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The JSON `data` of every event frame of an SSE body (comments and `retry` skipped)."""
    events: list[dict[str, Any]] = []
    for frame in text.split("\n\n"):
        event_type = None
        data_lines: list[str] = []
        for line in frame.splitlines():
            if line.startswith("event:"):
                event_type = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data_lines.append(line[len("data:") :].strip())
        if data_lines and event_type != "error":
            events.append(json.loads("\n".join(data_lines)))
    return events


async def events(client: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    """Every event of a finished execution, read from its SSE stream (from the first)."""
    response = await client.get(f"/api/v1/executions/{execution_id}/events")
    assert response.status_code == 200, response.text
    return parse_sse(response.text)


def event_types(stream: list[dict[str, Any]], node_id: str | None = None) -> list[str]:
    return [e["type"] for e in stream if node_id is None or e["node_id"] == node_id]


# ---------------------------------------------------------------------------- HTTP test server


@dataclass
class Route:
    """What one path answers. The first ``fail_times`` calls get ``fail_status``."""

    status: int = 200
    json: Any = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    fail_times: int = 0
    fail_status: int = 500
    fail_headers: dict[str, str] = field(default_factory=dict)
    sleep_s: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    """A tiny HTTP/1.1 server on 127.0.0.1:<ephemeral>; answers per scripted path.

    An unscripted path answers 200 with ``{"path": ..., "method": ..., "call": n}``.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.calls: Counter[str] = Counter()
        self.received: list[Received] = []
        self._server: asyncio.Server | None = None
        self.port = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def route(self, path: str, **script: Any) -> str:
        """Script path; its full URL."""
        self.routes[path] = Route(**script)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            if not request_line:
                return
            method, target, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                line = (await reader.readline()).decode("latin-1").strip()
                if not line:
                    break
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            path, _, query = target.partition("?")
            self.calls[path] += 1
            call = self.calls[path]
            self.received.append(Received(method, path, query, headers, body))
            status, payload, extra = self._answer(path, method, call)
            route = self.routes.get(path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if route is not None and route.sleep_s:
                    await asyncio.sleep(route.sleep_s)
            finally:
                self.in_flight -= 1
            head = [f"HTTP/1.1 {status} X", f"content-length: {len(payload)}"]
            head += [f"{k}: {v}" for k, v in extra.items()]
            head.append("connection: close")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _answer(self, path: str, method: str, call: int) -> tuple[int, bytes, dict[str, str]]:
        route = self.routes.get(path)
        if route is None:
            payload = json.dumps({"path": path, "method": method, "call": call}).encode()
            return 200, payload, {"content-type": "application/json"}
        if call <= route.fail_times:
            payload = json.dumps({"error": "scripted failure", "call": call}).encode()
            return (
                route.fail_status,
                payload,
                {"content-type": "application/json", **route.fail_headers},
            )
        if route.body is not None:
            return (
                route.status,
                route.body.encode(),
                {"content-type": "text/plain", **route.headers},
            )
        payload = json.dumps(route.json if route.json is not None else {"call": call}).encode()
        return route.status, payload, {"content-type": "application/json", **route.headers}


@pytest.fixture
async def http_server() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
