"""ToolService over gRPC: protobuf <-> the registry, nothing more."""

from __future__ import annotations

import grpc
from heddle.v1 import tool_pb2, tool_pb2_grpc

from libs.common import jsonutil
from libs.common.errors import InvalidArgument
from services.tool.mcp import McpTools
from services.tool.registry import ToolRegistry


class ToolServicer(tool_pb2_grpc.ToolServiceServicer):
    def __init__(self, registry: ToolRegistry, mcp: McpTools | None = None) -> None:
        self.registry = registry
        self.mcp = mcp

    async def ListTools(
        self, request: tool_pb2.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> tool_pb2.ListToolsResponse:
        if self.mcp is not None:
            await self.mcp.refresh_missing()
        return tool_pb2.ListToolsResponse(
            tools=[
                tool_pb2.ToolInfo(
                    name=tool.name,
                    description=tool.description,
                    source=tool.source,
                    input_schema_json=jsonutil.dumps(tool.input_schema),
                    output_schema_json=jsonutil.dumps(tool.output_schema),
                )
                for tool in self.registry.list()
            ]
        )

    async def CallTool(
        self, request: tool_pb2.CallToolRequest, context: grpc.aio.ServicerContext
    ) -> tool_pb2.CallToolResponse:
        try:
            arguments = jsonutil.loads(request.arguments_json)
        except ValueError as error:
            raise InvalidArgument(
                f"arguments_json is not valid JSON: {error}",
                [{"path": "", "message": "not valid JSON"}],
            ) from error
        result = await self.registry.call(
            request.name,
            arguments,
            timeout_s=context.time_remaining(),
            idempotency_key=request.idempotency_key,
            tenant_id=request.tenant_id,
        )
        return tool_pb2.CallToolResponse(result_json=jsonutil.dumps(result))
