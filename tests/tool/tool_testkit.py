"""Helpers of the tool service tests: a stdio MCP server entry and a local HTTP server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn

from tests.helpers import assert_eventually

MCP_SERVER = Path(__file__).with_name("mcp_test_server.py")


def stdio_mcp(name: str = "kit") -> dict[str, Any]:
    """The HEDDLE_MCP_SERVERS entry of the test MCP server, spawned over stdio."""
    return {"name": name, "command": sys.executable, "args": [str(MCP_SERVER)]}


@asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on 127.0.0.1:<free port> in this loop; yield its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", ws="none", http="h11"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    def started() -> bool:
        if task.done():
            task.result()  # raises what stopped it
            raise AssertionError("the app's server stopped before it started")
        return bool(server.started)

    await assert_eventually(started, timeout=10, message="the app's server did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
