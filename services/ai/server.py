"""Wires the AI service: settings → catalog → providers → router → gRPC server."""

from __future__ import annotations

import logging

from heddle.v1 import ai_pb2, ai_pb2_grpc

from libs.common.grpcutil import GrpcServer
from libs.common.runtime import run_service
from libs.common.service import RunningService, ServiceStack, start_service
from services.ai.providers import Provider, create_provider
from services.ai.router import Router
from services.ai.servicer import AiServicer
from services.ai.settings import AiSettings, resolve_api_key

log = logging.getLogger(__name__)

SERVICE_NAME = ai_pb2.DESCRIPTOR.services_by_name["AiService"].full_name


class AiServer(RunningService):
    """The running AI service and the router whose HTTP clients its stack closes."""

    def __init__(self, stack: ServiceStack, grpc_server: GrpcServer, router: Router) -> None:
        super().__init__(stack, grpc_server)
        self.router = router


def build_router(settings: AiSettings) -> Router:
    catalog = settings.catalog()
    secrets = settings.secrets()
    providers: dict[str, Provider] = {
        name: create_provider(name, config, resolve_api_key(config, secrets))
        for name, config in catalog.providers.items()
    }
    return Router(catalog, providers)


async def serve(settings: AiSettings) -> AiServer:
    """Start the AI service; stop it with ``await server.stop()``."""

    async def build(stack: ServiceStack) -> AiServer:
        router = build_router(settings)
        stack.callback(router.aclose)
        servicer = AiServicer(router)
        server = await stack.service_server(
            settings,
            "ai",
            [SERVICE_NAME],
            lambda s: ai_pb2_grpc.add_AiServiceServicer_to_server(servicer, s),
        )
        log.info("ai service ready", extra={"models": [m.name for m in router.catalog.models]})
        return AiServer(stack, server, router)

    return await start_service("ai", build)


def main() -> None:
    run_service("ai", AiSettings(), serve)
