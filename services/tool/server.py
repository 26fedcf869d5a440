"""Wires the tool service: settings → registry (built-ins, MCP servers) → gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx
from heddle.v1 import tool_pb2, tool_pb2_grpc

from libs.common.grpcutil import GrpcServer, TlsFiles, start_grpc_server
from libs.common.runtime import run_service
from services.tool.builtins import register_builtins
from services.tool.mcp import McpTools
from services.tool.registry import ToolRegistry
from services.tool.servicer import ToolServicer
from services.tool.settings import ToolSettings

log = logging.getLogger(__name__)

SERVICE_NAME = tool_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name


@dataclass
class ToolServer(GrpcServer):
    """The running server plus what it closes on stop (HTTP client, MCP sessions)."""

    http: httpx.AsyncClient | None = field(default=None)
    mcp: McpTools | None = field(default=None)

    async def stop(self, grace: float = 2.0) -> None:
        await super().stop(grace)
        if self.mcp is not None:
            await self.mcp.close()
        if self.http is not None:
            await self.http.aclose()


async def serve(settings: ToolSettings) -> GrpcServer:
    """Start the tool service; stop it with ``await server.stop()``."""
    registry = ToolRegistry(call_timeout_s=settings.tool_call_timeout_s)
    # Redirects are followed by the tool itself so that each hop is checked by netguard.
    http = httpx.AsyncClient(follow_redirects=False, timeout=settings.http_timeout_s)
    register_builtins(registry, settings, http)
    mcp = McpTools(registry, settings.mcp_servers)
    try:
        await mcp.refresh_missing()
        server = await start_grpc_server(
            "tool",
            [SERVICE_NAME],
            lambda s: tool_pb2_grpc.add_ToolServiceServicer_to_server(
                ToolServicer(registry, mcp), s
            ),
            host=settings.bind_host,
            port=settings.port_for("tool"),
            service_token=settings.service_token,
            tls=TlsFiles.from_settings(settings),
        )
    except BaseException:
        await mcp.close()
        await http.aclose()
        raise
    log.info("tool service ready", extra={"tools": [t.name for t in registry.list()]})
    return ToolServer(
        name=server.name,
        server=server.server,
        port=server.port,
        health=server.health,
        http=http,
        mcp=mcp,
    )


def main() -> None:
    run_service("tool", ToolSettings(), serve)
