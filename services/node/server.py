"""Wires a node replica: the executor registry, clients of ai/tool/workflow, the gRPC server."""

from __future__ import annotations

import logging

import httpx
from heddle.v1 import node_pb2, node_pb2_grpc

from libs.common.artifacts import artifact_settings_of, create_artifact_store
from libs.common.bus import EventBus
from libs.common.claimcheck import ClaimCheck
from libs.common.grpcutil import GrpcServer, TlsFiles
from libs.common.kv import KV, create_kv
from libs.common.logship import LogShipper
from libs.common.runtime import run_service
from libs.common.service import RunningService, ServiceStack, start_service
from services.node.attempts import NodeRunner
from services.node.executors.base import Services
from services.node.executors.files import StreamTransformExecutor
from services.node.grpc_clients import GrpcAiClient, GrpcToolClient
from services.node.registry import default_registry
from services.node.servicer import NodeServicer
from services.node.settings import NodeServiceSettings
from services.node.workflow_client import GrpcWorkflowClient

log = logging.getLogger(__name__)


class NodeService(RunningService):
    """A running node replica (its stack closes the clients, the shipper and an owned bus)."""

    def __init__(
        self,
        stack: ServiceStack,
        grpc_server: GrpcServer,
        settings: NodeServiceSettings,
        servicer: NodeServicer,
    ) -> None:
        super().__init__(stack, grpc_server)
        self.settings = settings
        self.servicer = servicer


async def serve(
    settings: NodeServiceSettings, *, bus: EventBus | None = None, kv: KV | None = None
) -> NodeService:
    """Start a node replica; pass `bus` and `kv` to share them (embedded mode)."""

    async def build(stack: ServiceStack) -> NodeService:
        shared_bus = await stack.bus(settings.broker_url, settings.broker_prefix, bus)
        # What node code logs inside an attempt reaches the log service with its ids.
        shipper = LogShipper(shared_bus, service="node")
        await shipper.start()
        stack.callback(shipper.stop)
        logging.getLogger().addHandler(shipper.handler)
        stack.sync_callback(logging.getLogger().removeHandler, shipper.handler)
        token = settings.service_token
        tls = TlsFiles.from_settings(settings)
        ai_channel = stack.channel(settings.ai_address, service_token=token, tls=tls)
        tool_channel = stack.channel(settings.tool_address, service_token=token, tls=tls)
        workflow_channel = stack.channel(settings.workflow_address, service_token=token, tls=tls)
        # Redirects are followed by the executor itself so each hop passes the address guard.
        http = httpx.AsyncClient(follow_redirects=False)
        stack.callback(http.aclose)
        artifacts = create_artifact_store(artifact_settings_of(settings))
        stack.callback(artifacts.close)
        store = kv
        if store is None:
            store = create_kv(settings.redis_url)
            stack.callback(store.close)
        services = Services(
            ai=GrpcAiClient(ai_channel, settings.grpc_deadline_s),
            tools=GrpcToolClient(tool_channel, settings.grpc_deadline_s),
            workflows=GrpcWorkflowClient(
                workflow_channel, settings.grpc_deadline_s, settings.child_deadline_s
            ),
            http=http,
            settings=settings.executor_settings(),
            artifacts=artifacts,
            kv=store,
        )
        registry = default_registry()
        # Executors that hold connections (sql's pools) close them.
        stack.callback(registry.close)
        claims = ClaimCheck(artifacts, settings.claim_check_bytes)
        registry.register(StreamTransformExecutor(artifacts))
        servicer = NodeServicer(
            NodeRunner(registry, services, claims), settings.max_concurrent_nodes
        )
        server = await stack.service_server(
            settings,
            "node",
            [node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name],
            lambda s: node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, s),
            grace_s=1.0,
        )
        return NodeService(stack, server, settings, servicer)

    return await start_service("node", build)


def main() -> None:
    run_service("node", NodeServiceSettings(), serve)
