"""Issue 19, the loop's acceptance item on the production topology: a loop polls a local HTTP
server until it answers `done` (6 iterations); the owning workflow replica is SIGKILLed during
iteration 3, once the checkpoint of iteration 2 is durable. The other replica resumes the loop
at iteration 3: iterations 1, 2 and 4-6 reach the server exactly once, iteration 3 at most
twice (its first request was in flight when the owner died), and the execution shows the six
iterations and a node.iteration event per iteration."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import E2E, create_workflow, execute, wait_final
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e

EXTRA_ENV = {"HEDDLE_LEASE_TTL_S": "10", "HEDDLE_HTTP_ALLOW_HOSTS": "127.0.0.1"}
REPLICAS = ("workflow-1", "workflow-2")
#: The 0-based index of iteration 3 (held open until its owner is killed) and of the last.
HELD, LAST = 2, 5


class CountingServer:
    """Answers GET /poll?i=<index> with {"state": "running"} (or "done" at LAST), counting the
    requests per index. The first request of HELD is held open (until stop), so that it is in
    flight when the owner dies."""

    def __init__(self) -> None:
        self.seen: collections.Counter[int] = collections.Counter()
        self.held = asyncio.Event()
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = (await reader.readline()).decode("latin-1").split(" ")[1]
            headers: dict[str, str] = {}
            while line := (await reader.readline()).decode("latin-1").strip():
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            await reader.readexactly(int(headers.get("content-length", "0") or 0))
            index = int(parse_qs(urlsplit(target).query)["i"][0])
            self.seen[index] += 1
            if index == HELD and self.seen[index] == 1:
                self.held.set()
                # Its client goes with the killed owner's attempt: the wait ends at stop.
                await self._release.wait()
            state = "done" if index == LAST else "running"
            payload = json.dumps({"state": state, "index": index}).encode()
            head = (
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + payload)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def _checkpoint_index(e2e: E2E, execution_id: str) -> int | None:
    rows = await e2e.fetch(
        "SELECT checkpoint FROM node_runs WHERE execution_id = $1 AND node_id = 'poll'",
        execution_id,
    )
    if not rows or rows[0]["checkpoint"] is None:
        return None
    return int(json.loads(rows[0]["checkpoint"])["index"])


async def test_a_loop_resumes_at_the_running_iteration_after_its_owner_is_killed(
    fresh_topology: E2E,
) -> None:
    e2e = fresh_topology
    server = CountingServer()
    await server.start()
    try:
        definition = {
            "name": "poll-until-done",
            "nodes": [
                {
                    "id": "poll",
                    "type": "loop",
                    "params": {
                        "node": {
                            "type": "http_request",
                            "params": {
                                "method": "GET",
                                "url": f"http://127.0.0.1:{server.port}/poll"
                                "?i={{ loop.index }}",
                            },
                        },
                        "until": "{{ loop.output.json.state == 'done' }}",
                        "max_iterations": 10,
                    },
                },
                {"id": "after", "type": "noop"},
            ],
            "edges": [{"source": "poll", "target": "after"}],
        }
        async with e2e.client() as client:
            workflow_id = await create_workflow(client, definition)
            execution_id = await execute(client, workflow_id)
            await asyncio.wait_for(server.held.wait(), 60)

            async def durable() -> bool:  # iterations 1 and 2 are in the node row
                return await _checkpoint_index(e2e, execution_id) == HELD

            await assert_eventually(durable, timeout=20, message="no checkpoint after 2")
            rows = await e2e.fetch("SELECT owner FROM executions WHERE id = $1", execution_id)
            owner = rows[0]["owner"]
            assert owner in REPLICAS, owner
            e2e.topology.kill(owner)
            execution = await wait_final(client, execution_id, timeout=90)
    finally:
        await server.stop()

    assert execution["status"] == "succeeded", execution["error"]
    assert sorted(server.seen) == list(range(LAST + 1)), server.seen
    assert 1 <= server.seen[HELD] <= 2, server.seen
    assert all(server.seen[i] == 1 for i in range(LAST + 1) if i != HELD), server.seen
    poll = next(node for node in execution["nodes"] if node["node_id"] == "poll")
    assert poll["output"]["iterations"] == LAST + 1
    assert [o["json"]["index"] for o in poll["output"]["outputs"]] == list(range(LAST + 1))
    assert [a["status"] for a in poll["attempt_history"]] == ["lost", "succeeded"]
    progress = await e2e.fetch(
        "SELECT data FROM execution_events WHERE execution_id = $1 AND type = 'node.iteration'"
        " ORDER BY seq",
        execution_id,
    )
    iterations = [json.loads(row["data"])["iteration"] for row in progress]
    assert iterations == list(range(LAST + 1)), iterations
    e2e.assert_no_crash()
