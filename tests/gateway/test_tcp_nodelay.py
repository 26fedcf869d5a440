"""Issue 12: the gateway's accepted sockets have TCP_NODELAY, on every event loop it runs on.

Without it, every request on a reused (keep-alive) connection waited ~40 ms: Nagle's
algorithm holding the response back until the client's delayed ACK came.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import httpx
import pytest

from libs.cli.topology import free_port
from libs.common.runtime import run
from services.gateway.server import GatewayServer
from services.gateway.settings import GatewaySettings
from tests.helpers import assert_eventually

REPO = Path(__file__).resolve().parents[2]


def _settings(tmp_path: Path, event_loop: Literal["uvloop", "asyncio"]) -> GatewaySettings:
    return GatewaySettings(
        http_port=0,
        auth_enabled=False,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        redis_url="memory://",
        event_loop=event_loop,
    )


async def _nodelay_of_accepted_sockets(settings: GatewaySettings) -> list[int]:
    server = GatewayServer(settings)
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # one connection, reused
                assert (await client.get("/healthz")).status_code == 200
            sockets = server.client_sockets()
            return [sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for sock in sockets]
    finally:
        await server.stop()


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_accepted_sockets_have_tcp_nodelay(
    tmp_path: Path, event_loop: Literal["uvloop", "asyncio"]
) -> None:
    settings = _settings(tmp_path, event_loop)
    # runtime.run is what `python -m services.gateway` runs on: the loop the settings choose
    # (a thread of its own, so it never meets pytest's loop). `make run` serves the same
    # GatewayServer in its own process's loop.
    flags = await asyncio.to_thread(run, _nodelay_of_accepted_sockets(settings), settings)
    assert flags, "the test saw no accepted connection"
    assert all(flags), f"accepted sockets without TCP_NODELAY on {event_loop}: {flags}"


def _median_request_s(url: str, *, reuse: bool, count: int = 20) -> float:
    """Median time of a request on one kept-alive connection, or each on a new connection
    (`Connection: close`: the same client then connects again for the next one)."""
    timings = []
    headers = {} if reuse else {"Connection": "close"}
    with httpx.Client(base_url=url, headers=headers) as client:
        client.get("/healthz")  # warm up (and open the connection the reused requests share)
        for _ in range(count):
            start = time.perf_counter()
            response = client.get("/healthz")
            timings.append(time.perf_counter() - start)
            assert response.status_code == 200
    return statistics.median(timings)


async def test_reused_connection_is_not_slower_than_a_new_one(tmp_path: Path) -> None:
    """The production process on the plain asyncio loop (where the stall was): a request on a
    kept-alive connection is not several times slower than one on a new connection."""
    port = free_port()
    env = {
        **os.environ,
        "HEDDLE_HTTP_PORT": str(port),
        "HEDDLE_AUTH_ENABLED": "false",
        "HEDDLE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "HEDDLE_REDIS_URL": "memory://",
        "HEDDLE_EVENT_LOOP": "asyncio",
    }
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "gateway.log").open("wb") as log:
        process = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "services.gateway"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        async def listening() -> bool:
            assert process.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                async with httpx.AsyncClient(base_url=url) as client:
                    return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await assert_eventually(listening, timeout=60, interval=0.1, message="gateway not up")
        new = await asyncio.to_thread(_median_request_s, url, reuse=False)
        reused = await asyncio.to_thread(_median_request_s, url, reuse=True)
        # Generous: a reused connection is normally the faster one; the stall made it ~20x
        # slower (43 ms against 2 ms).
        assert reused < 5 * new, f"median reused {reused * 1000:.1f} ms, new {new * 1000:.1f} ms"
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


async def test_idle_keep_alive_connections_outlive_the_clients_own_expiry(tmp_path: Path) -> None:
    """A kept-alive connection idle past httpx's 5 s expiry (and a load balancer's 60 s) is
    closed by the client, not by the server: a server closing first races the client's next
    request, which then fails with a reset (seen as httpx.ReadError in a browser test). The
    setting is what uvicorn closes by: at 1 s the idle connection goes, at the default it stays.
    """
    assert GatewaySettings().http_keepalive_s > 60
    for keepalive_s, closed in ((1, True), (75, False)):
        settings = _settings(tmp_path, "uvloop").model_copy(
            update={"http_keepalive_s": keepalive_s}
        )
        server = GatewayServer(settings)
        port = await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/healthz")).status_code == 200
                assert len(server.client_sockets()) == 1
                await asyncio.sleep(2.0)
                assert (server.client_sockets() == []) is closed, (keepalive_s, closed)
        finally:
            await server.stop()
