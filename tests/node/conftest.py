"""Fixtures of the node executors' tests: fake services, a node runner, a local HTTP server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from services.node.executors.base import NodeRequest, NodeResult, NodeSettings, Services
from services.node.registry import NodeTypeRegistry, default_registry
from tests.node.fakes import FakeAi, FakeTools, FakeWorkflows

RunNode = Callable[..., Awaitable[NodeResult]]


@pytest.fixture
def registry() -> NodeTypeRegistry:
    return default_registry()


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    async with httpx.AsyncClient() as client:
        yield Services(
            ai=FakeAi(),
            tools=FakeTools(),
            workflows=FakeWorkflows(),
            http=client,
            settings=NodeSettings(),
        )


def make_request(
    node_type: str,
    params: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    inputs: list[tuple[str, str | None, str | None]] | None = None,
    timeout_s: float | None = None,
    node_id: str = "n1",
) -> NodeRequest:
    base_context: dict[str, Any] = {
        "inputs": {},
        "system": {"execution_id": "ex1", "workflow_id": "wf1", "node_id": node_id, "attempt": 1},
    }
    return NodeRequest(
        execution_id="ex1",
        node_id=node_id,
        node_type=node_type,
        attempt=1,
        idempotency_key=f"ex1/{node_id}/1",
        params=params or {},
        context={**base_context, **(context or {})},
        inputs=inputs or [],
        timeout_s=timeout_s,
    )


@pytest.fixture
def run_node(registry: NodeTypeRegistry, services: Services) -> RunNode:
    async def run(
        node_type: str, params: dict[str, Any] | None = None, **kwargs: Any
    ) -> NodeResult:
        request = make_request(node_type, params, **kwargs)
        return await registry.get(node_type).execute(request, services)

    return run


# ------------------------------------------------------------------ a tiny HTTP/1.1 responder

Route = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


def _json(status: int, value: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json", **headers}, json.dumps(value).encode()


def _route(method: str, path: str, headers: dict[str, str], body: bytes):
    if path.startswith("/echo"):
        return _json(
            200, {"method": method, "path": path, "headers": headers, "body": body.decode()}
        )
    if path == "/text":
        return 200, {"content-type": "text/plain"}, b"plain text"
    if path == "/status/429":
        return _json(429, {"error": "slow down"}, **{"retry-after": "7"})
    if path.startswith("/status/"):
        return _json(int(path.rsplit("/", 1)[1]), {"error": "boom"})
    if path == "/redirect-to-metadata":
        return 302, {"location": "http://169.254.169.254/latest/meta-data"}, b""
    if path == "/redirect":
        return 302, {"location": "/echo?redirected=1"}, b""
    if path == "/big":
        return 200, {"content-type": "text/plain"}, b"x" * 4096
    return 404, {"content-type": "text/plain"}, b"not found"


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    """Serves _route on 127.0.0.1; yields the base URL. /slow never answers."""

    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode().split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if path == "/slow":
                await asyncio.sleep(5)
            status, response_headers, payload = _route(method, path, headers, body)
            lines = [f"HTTP/1.1 {status} X", f"content-length: {len(payload)}", "connection: close"]
            lines += [f"{name}: {value}" for name, value in response_headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for task in list(handlers):  # /slow handlers still sleeping
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
