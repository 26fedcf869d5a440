"""Wires the tool service: settings → registry (built-ins, MCP servers) → gRPC server."""

from __future__ import annotations

import logging

import grpc
import httpx
from heddle.v1 import knowledge_pb2, knowledge_pb2_grpc, tool_pb2, tool_pb2_grpc

from libs.common.artifacts import artifact_settings_of, create_artifact_store
from libs.common.db import session_factory
from libs.common.grpcutil import GrpcServer, TlsFiles
from libs.common.periodic import run_periodic
from libs.common.runtime import run_service
from libs.common.service import RunningService, ServiceStack, start_service
from libs.migrations import upgrade
from services.tool.builtins import register_builtins
from services.tool.knowledge.chroma import ChromaIndex
from services.tool.knowledge.index import EmbeddedIndex, VectorIndex
from services.tool.knowledge.service import KnowledgeManager
from services.tool.knowledge.servicer import KnowledgeServicer
from services.tool.knowledge.tool import GrpcEmbed, register_knowledge_search
from services.tool.mcp import McpTools
from services.tool.registry import ToolRegistry
from services.tool.servicer import ToolServicer
from services.tool.settings import ToolSettings

log = logging.getLogger(__name__)

SERVICE_NAME = tool_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name
KNOWLEDGE_SERVICE = knowledge_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name


class ToolServer(RunningService):
    """The running tool service (its stack closes the HTTP client and the MCP sessions)."""

    def __init__(
        self, stack: ServiceStack, grpc_server: GrpcServer, http: httpx.AsyncClient, mcp: McpTools
    ) -> None:
        super().__init__(stack, grpc_server)
        self.http = http
        self.mcp = mcp
        self.knowledge: KnowledgeManager | None = None


async def knowledge_manager(settings: ToolSettings, stack: ServiceStack) -> KnowledgeManager:
    """Knowledge bases: their tables, the vector index, Embed over gRPC, the artifact store."""
    engine = stack.database(settings.database_url)
    await upgrade(engine)
    index: VectorIndex
    if settings.knowledge_index_url:
        index = ChromaIndex(settings.knowledge_index_url, timeout_s=settings.grpc_deadline_s)
    else:
        index = EmbeddedIndex(settings.knowledge_index_path)
    stack.callback(index.aclose)
    artifacts = create_artifact_store(artifact_settings_of(settings))
    stack.callback(artifacts.close)
    tls = TlsFiles.from_settings(settings)
    ai = stack.channel(settings.ai_address, service_token=settings.service_token, tls=tls)
    # Ingestion progress goes out on the broker (a private in-process bus in the embedded
    # mode: publisher and followers are this process).
    bus = await stack.bus(settings.broker_url, settings.broker_prefix)
    return KnowledgeManager(
        session_factory(engine),
        index,
        GrpcEmbed(ai, settings.grpc_deadline_s),
        artifacts,
        batch_size=settings.knowledge_embed_batch,
        bus=bus,
    )


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
        knowledge = await knowledge_manager(settings, stack)
        register_knowledge_search(registry, knowledge)

        def register(s: grpc.aio.Server) -> None:
            tool_pb2_grpc.add_ToolServiceServicer_to_server(ToolServicer(registry, mcp), s)
            knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server(
                KnowledgeServicer(knowledge), s
            )

        server = await stack.service_server(
            settings, "tool", [SERVICE_NAME, KNOWLEDGE_SERVICE], register
        )
        stack.task(
            run_periodic(
                "knowledge-ingest",
                settings.knowledge_ingest_interval_s,
                knowledge.ingest_pending,
                immediately=True,
                wake=knowledge.wake,
            ),
            "knowledge-ingest",
        )
        log.info("tool service ready", extra={"tools": [t.name for t in registry.list()]})
        running = ToolServer(stack, server, http, mcp)
        running.knowledge = knowledge
        return running

    return await start_service("tool", build)


def main() -> None:
    run_service("tool", ToolSettings(), serve)
