from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from heddle.v1 import tool_pb2_grpc

from libs.common.grpcutil import create_channel
from services.tool.server import serve
from services.tool.settings import ToolSettings

ToolFactory = Callable[..., Awaitable[tool_pb2_grpc.ToolServiceStub]]


@pytest.fixture
async def tool_service() -> AsyncIterator[ToolFactory]:
    """Start the tool service in-process on port 0; yield its stub."""
    started: list[Any] = []

    async def start(**options: Any) -> Any:
        server = await serve(ToolSettings(grpc_port=0, **options))
        channel = create_channel(f"127.0.0.1:{server.port}")
        started.append((server, channel))
        stub = tool_pb2_grpc.ToolServiceStub(channel)
        stub.address = f"127.0.0.1:{server.port}"
        return stub

    yield start
    for server, channel in started:
        await channel.close()
        await server.stop(grace=0)
