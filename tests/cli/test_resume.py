"""`heddle run` survives a dropped event stream: it resumes with `?after=<last seq>` and
shows every event once."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import httpx

from libs.cli.stack import Stack
from tests.cli.conftest import HEDDLE, ask_workflow, cli_env
from tests.helpers import assert_eventually

EVENTS_REQUEST = re.compile(rb"GET /api/v1/executions/([0-9a-f-]{36})/events\?after=(\d+)")


class DroppingProxy:
    """A TCP proxy of the gateway that cuts the first event stream once it has carried a
    node.waiting event (as a network drop would), and records every event-stream request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.streams: list[tuple[str, int]] = []
        self.dropped = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        carries_events = False

        async def upward() -> None:
            nonlocal carries_events
            while chunk := await client_r.read(65536):
                for match in EVENTS_REQUEST.finditer(chunk):
                    carries_events = True
                    self.streams.append((match[1].decode(), int(match[2])))
                upstream_w.write(chunk)
                await upstream_w.drain()

        async def downward() -> None:
            seen = b""
            while chunk := await upstream_r.read(65536):
                seen = (seen + chunk)[-65536:]
                if carries_events and not self.dropped.is_set() and b"node.waiting" in seen:
                    client_w.write(chunk)  # the waiting event arrives, then the line drops
                    await client_w.drain()
                    self.dropped.set()
                    return
                client_w.write(chunk)
                await client_w.drain()

        tasks = [asyncio.create_task(upward()), asyncio.create_task(downward())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_w, upstream_w):
                writer.transport.abort()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task


async def test_run_resumes_a_dropped_event_stream(stack: Stack, tmp_path: Path) -> None:
    proxy = DroppingProxy(int(stack.gateway_url.rsplit(":", 1)[1]))
    proxy_url = await proxy.start()
    try:
        process = await asyncio.create_subprocess_exec(
            HEDDLE,
            "run",
            str(ask_workflow(tmp_path)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(proxy_url),
        )
        await assert_eventually(proxy.dropped.is_set, timeout=30, message="stream not dropped")
        execution_id = proxy.streams[0][0]
        headers = {"Authorization": f"Bearer {stack.admin_key}"}
        async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as http:
            answered = await http.post(
                f"/api/v1/executions/{execution_id}/input",
                json={"node_id": "approve", "data": {"approved": True, "count": 5}},
            )
            assert answered.status_code == 200, answered.text
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await proxy.stop()
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert '"count": 5' in text
    for line in ("✓ start", "… approve", "✓ approve", "✓ done"):
        assert text.count(line) == 1, f"{line!r} shown {text.count(line)} times:\n{text}"
    first, *resumed = proxy.streams
    assert first == (execution_id, 0)
    assert resumed and resumed[0][0] == execution_id and resumed[0][1] > 0  # ?after=<last seq>
