from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fake_llm import FakeLLM, RunningServer
from heddle.v1 import ai_pb2_grpc

from libs.common.grpcutil import create_channel
from services.ai.server import serve
from services.ai.settings import AiSettings

AiFactory = Callable[..., Awaitable[ai_pb2_grpc.AiServiceStub]]


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    async with RunningServer(FakeLLM()) as fake:
        yield fake


@pytest.fixture
async def ai_service() -> AsyncIterator[AiFactory]:
    """Start the AI service in-process on port 0 with the given catalog; yield its stub."""
    started: list[Any] = []

    async def start(catalog: dict[str, Any] | None = None, **options: Any) -> Any:
        settings = AiSettings(grpc_port=0, ai_models=catalog, **options)
        server = await serve(settings)
        channel = create_channel(f"127.0.0.1:{server.port}")
        started.append((server, channel))
        stub = ai_pb2_grpc.AiServiceStub(channel)
        stub.address = f"127.0.0.1:{server.port}"
        stub.server = server
        return stub

    yield start
    for server, channel in started:
        await channel.close()
        await server.stop(grace=0)
