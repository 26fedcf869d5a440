"""Wires the tool service: settings → registry (built-ins, MCP servers) → gRPC server."""

from __future__ import annotations

import logging

import httpx
from heddle.v1 import tool_pb2, tool_pb2_grpc

from libs.common.grpcutil import GrpcServer
from libs.common.runtime import run_service
from libs.common.service import RunningService, ServiceStack, start_service
from services.tool.builtins import register_builtins
from services.tool.mcp import McpTools
from services.tool.registry import ToolRegistry
from services.tool.servicer import ToolServicer
from services.tool.settings import ToolSettings

log = logging.getLogger(__name__)

SERVICE_NAME = tool_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name


class ToolServer(RunningService):
    """The running tool service (its stack closes the HTTP client and the MCP sessions)."""

    def __init__(
        self, stack: ServiceStack, grpc_server: GrpcServer, http: httpx.AsyncClient, mcp: McpTools
    ) -> None:
        super().__init__(stack, grpc_server)
        self.http = http
        self.mcp = mcp


async def serve(settings: ToolSettings) -> ToolServer:
    """Start the tool service; stop it with ``await server.stop()``."""

    async def build(stack: ServiceStack) -> ToolServer:
        registry = ToolRegistry(call_timeout_s=settings.tool_call_timeout_s)
        # Redirects are followed by the tool itself so that each hop is checked by netguard.
        http = httpx.AsyncClient(follow_redirects=False, timeout=settings.http_timeout_s)
        stack.callback(http.aclose)
        register_builtins(registry, settings, http)
        mcp = McpTools(registry, settings.mcp_servers)
        stack.callback(mcp.close)
        await mcp.refresh_missing()
        server = await stack.service_server(
            settings,
            "tool",
            [SERVICE_NAME],
            lambda s: tool_pb2_grpc.add_ToolServiceServicer_to_server(
                ToolServicer(registry, mcp), s
            ),
        )
        log.info("tool service ready", extra={"tools": [t.name for t in registry.list()]})
        return ToolServer(stack, server, http, mcp)

    return await start_service("tool", build)


def main() -> None:
    run_service("tool", ToolSettings(), serve)
