"""Issue 12 items 7 and 8, on the production topology: a node attempt re-dispatched after its
workflow replica died keeps its idempotency key (and http_request sends it), and a dead
owner is detected in well under its lease's time to live, while a merely slow (stopped)
owner is never taken over."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from tests.e2e.conftest import (
    E2E,
    create_workflow,
    execute,
    wait_final,
)

pytestmark = pytest.mark.e2e

#: The production lease (not the short one of the other e2e tests): a takeover well inside
#: it can only come from the detection of the dead owner.
PRODUCTION_LEASE_TTL_S = 10.0
EXTRA_ENV = {
    "HEDDLE_LEASE_TTL_S": str(PRODUCTION_LEASE_TTL_S),
    "HEDDLE_HTTP_ALLOW_HOSTS": "127.0.0.1",
}
REPLICAS = ("workflow-1", "workflow-2")


class DedupingServer:
    """A downstream service that deduplicates by Idempotency-Key, as Stripe's API does: the
    side effect happens once per key (every time without one); a repeated key gets the first
    request's answer. The first request is held open until a second one arrives, so that it
    is in flight when its workflow replica is killed."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []
        self.effects = 0
        self.first_arrived = asyncio.Event()
        self._second_arrived = asyncio.Event()
        self._answers: dict[str, asyncio.Future[bytes]] = {}
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._second_arrived.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            headers: dict[str, str] = {}
            while line := (await reader.readline()).decode("latin-1").strip():
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            await reader.readexactly(int(headers.get("content-length", "0") or 0))
            key = headers.get("idempotency-key")
            self.keys.append(key)
            if len(self.keys) > 1:
                self._second_arrived.set()
            if key is not None and key in self._answers:
                payload = await self._answers[key]
            else:
                self.effects += 1
                answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                if key is not None:
                    self._answers[key] = answer
                if len(self.keys) == 1:
                    self.first_arrived.set()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._second_arrived.wait(), 60)
                payload = json.dumps({"charge": self.effects}).encode()
                answer.set_result(payload)
            head = (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the first request's client may be gone with its attempt
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def _owner(e2e: E2E, execution_id: str) -> str | None:
    rows = await e2e.fetch("SELECT owner FROM executions WHERE id = $1", execution_id)
    return rows[0]["owner"] if rows else None


async def test_a_redispatched_http_request_repeats_its_idempotency_key(
    fresh_topology: E2E,
) -> None:
    """Kill the workflow replica owning an execution while its http_request is in flight:
    the survivor re-dispatches the node, and the request it sends carries the same
    Idempotency-Key, so the downstream service performs the side effect once."""
    e2e = fresh_topology
    server = DedupingServer()
    await server.start()
    try:
        definition = {
            "name": "charge",
            "nodes": [
                {
                    "id": "charge",
                    "type": "http_request",
                    "params": {
                        "method": "POST",
                        "url": f"http://127.0.0.1:{server.port}/charges",
                        "json": {"amount": 100},
                    },
                },
                {"id": "after", "type": "noop"},
            ],
            "edges": [{"source": "charge", "target": "after"}],
        }
        async with e2e.client() as client:
            workflow_id = await create_workflow(client, definition)
            execution_id = await execute(client, workflow_id)
            await asyncio.wait_for(server.first_arrived.wait(), 30)
            owner = await _owner(e2e, execution_id)
            assert owner in REPLICAS, owner
            e2e.topology.kill(owner)
            execution = await wait_final(client, execution_id, timeout=60)
    finally:
        await server.stop()

    assert execution["status"] == "succeeded", execution["error"]
    charge = next(n for n in execution["nodes"] if n["node_id"] == "charge")
    assert [a["status"] for a in charge["attempt_history"]] == ["lost", "succeeded"]
    assert charge["output"]["json"] == {"charge": 1}
    assert len(server.keys) == 2, server.keys
    assert server.keys[0] == f"{execution_id}/charge/1", server.keys
    assert server.keys[1] == server.keys[0], server.keys
    assert server.effects == 1
    assert await _owner(e2e, execution_id) is None
