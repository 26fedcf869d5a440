"""Wires the AI service: settings → catalog → providers → router → gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from heddle.v1 import ai_pb2, ai_pb2_grpc

from libs.common.grpcutil import GrpcServer, TlsFiles, start_grpc_server
from libs.common.runtime import run_service
from services.ai.providers import Provider, create_provider
from services.ai.router import Router
from services.ai.servicer import AiServicer
from services.ai.settings import AiSettings, resolve_api_key

log = logging.getLogger(__name__)

SERVICE_NAME = ai_pb2.DESCRIPTOR.services_by_name["AiService"].full_name


@dataclass
class AiServer(GrpcServer):
    """The running server plus the router whose HTTP clients it closes on stop."""

    router: Router | None = field(default=None)

    async def stop(self, grace: float = 2.0) -> None:
        await super().stop(grace)
        if self.router is not None:
            await self.router.aclose()


def build_router(settings: AiSettings) -> Router:
    catalog = settings.catalog()
    secrets = settings.secrets()
    providers: dict[str, Provider] = {
        name: create_provider(name, config, resolve_api_key(config, secrets))
        for name, config in catalog.providers.items()
    }
    return Router(catalog, providers)


async def serve(settings: AiSettings) -> GrpcServer:
    """Start the AI service; stop it with ``await server.stop()``."""
    router = build_router(settings)
    servicer = AiServicer(router)
    try:
        server = await start_grpc_server(
            "ai",
            [SERVICE_NAME],
            lambda s: ai_pb2_grpc.add_AiServiceServicer_to_server(servicer, s),
            host=settings.bind_host,
            port=settings.port_for("ai"),
            service_token=settings.service_token,
            tls=TlsFiles.from_settings(settings),
        )
    except BaseException:
        await router.aclose()
        raise
    log.info("ai service ready", extra={"models": [m.name for m in router.catalog.models]})
    return AiServer(
        name=server.name,
        server=server.server,
        port=server.port,
        health=server.health,
        router=router,
    )


def main() -> None:
    run_service("ai", AiSettings(), serve)
