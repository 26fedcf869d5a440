"""Issue 20, on the production topology: a failed execution's on_failure handler runs exactly
once even when the workflow replica that owns the execution is killed (SIGKILL) between the
failure and the handler's effect; the execution ends failed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

import pytest

from tests.e2e.conftest import E2E, create_workflow, execute, wait_final
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e

EXTRA_ENV = {"HEDDLE_LEASE_TTL_S": "10", "HEDDLE_HTTP_ALLOW_HOSTS": "127.0.0.1"}
REPLICAS = ("workflow-1", "workflow-2")


class CountingServer:
    """Counts requests per path: /fail answers 500, everything else 200 (the body echoed)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.port = 0

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
            _, target, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while line := (await reader.readline()).decode("latin-1").strip():
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            path = target.partition("?")[0]
            self.calls[path] += 1
            if path == "/notify":
                self.bodies.append(body)
            status = "500 Internal Server Error" if path == "/fail" else "200 OK"
            payload = json.dumps({"path": path}).encode()
            head = (
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def test_on_failure_runs_once_when_the_owner_dies_before_its_effect(
    fresh_topology: E2E,
) -> None:
    """The handler is a sub-workflow that waits 3 s, then notifies: the parent's owner is
    killed while the handler runs (after the failure, before the notification). The other
    replica takes the execution over and resumes the handler; the notification is sent once,
    with the failure's error."""
    e2e = fresh_topology
    server = CountingServer()
    await server.start()
    try:
        async with e2e.client() as client:
            notifier = await create_workflow(
                client,
                {
                    "name": "notifier",
                    "inputs": {"why": {"type": "string"}, "node": {"type": "string"}},
                    "nodes": [
                        {"id": "wait", "type": "delay", "params": {"seconds": 3}},
                        {
                            "id": "tell",
                            "type": "http_request",
                            "params": {
                                "url": server.url("/notify"),
                                "method": "POST",
                                "json": {"why": "{{ inputs.why }}", "node": "{{ inputs.node }}"},
                            },
                        },
                    ],
                    "edges": [{"source": "wait", "target": "tell"}],
                },
            )
            workflow_id = await create_workflow(
                client,
                {
                    "name": "fails",
                    "nodes": [
                        {
                            "id": "charge",
                            "type": "http_request",
                            "params": {"url": server.url("/fail")},
                        }
                    ],
                    "on_failure": {
                        "workflow_id": notifier,
                        "inputs": {"why": "{{ error.message }}", "node": "{{ error.node_id }}"},
                    },
                },
            )
            execution_id = await execute(client, workflow_id)

            async def handler_running() -> bool:
                rows = await e2e.fetch(
                    "SELECT status FROM node_runs WHERE execution_id = $1 AND node_id = $2",
                    execution_id,
                    "_on_failure",
                )
                return bool(rows) and rows[0]["status"] in ("queued", "running")

            await assert_eventually(handler_running, timeout=30, message="handler never ran")
            rows = await e2e.fetch(
                "SELECT owner, error FROM executions WHERE id = $1", execution_id
            )
            owner = rows[0]["owner"]
            assert owner in REPLICAS, owner
            assert rows[0]["error"] is not None  # the failure, persisted with the handler's intent
            assert server.calls["/notify"] == 0
            e2e.topology.kill(owner)
            execution = await wait_final(client, execution_id, timeout=90)

            children = await e2e.fetch(
                "SELECT status FROM executions WHERE workflow_id = $1", notifier
            )
    finally:
        await server.stop()

    assert execution["status"] == "failed", execution
    assert "charge" in execution["error"]["message"]
    handler = next(n for n in execution["nodes"] if n["node_id"] == "_on_failure")
    assert handler["status"] == "succeeded", handler
    assert [a["status"] for a in handler["attempt_history"]] == ["lost", "succeeded"]
    assert server.calls["/fail"] == 1
    # One child execution (the re-dispatched handler attached to the first), finished.
    assert [row["status"] for row in children] == ["succeeded"]
    assert server.calls["/notify"] == 1, server.calls
    body = json.loads(server.bodies[0])
    assert body["node"] == "charge" and "charge" in body["why"]
