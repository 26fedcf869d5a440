"""A small stdio MCP server for the tool service tests (run as a subprocess)."""

from __future__ import annotations

import os

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("testkit")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@app.tool()
def fail(reason: str) -> str:
    """Always fails with the reason."""
    raise ToolError(reason)


@app.tool()
def idempotency_key(ctx: Context) -> str:
    """The idempotency key the call's _meta carried ("" without one)."""
    meta = ctx.request_context.meta or {}
    return str(meta.get("io.heddle/idempotency-key", ""))


@app.tool()
def crash() -> str:
    """Kill the server process (to test reconnection)."""
    os._exit(3)


if __name__ == "__main__":
    app.run()
