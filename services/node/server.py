"""Wires a node replica: the executor registry, clients of ai/tool/workflow, the gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from heddle.v1 import node_pb2, node_pb2_grpc

from libs.common.bus import EventBus, create_bus
from libs.common.grpcutil import GrpcServer, TlsFiles, create_channel, start_grpc_server
from libs.common.logship import LogShipper
from libs.common.runtime import run_service
from services.node.executors.base import Services
from services.node.grpc_clients import GrpcAiClient, GrpcToolClient
from services.node.registry import default_registry
from services.node.servicer import NodeRunner, NodeServicer
from services.node.settings import NodeServiceSettings
from services.node.workflow_client import GrpcWorkflowClient

log = logging.getLogger(__name__)


@dataclass
class NodeService:
    settings: NodeServiceSettings
    grpc: GrpcServer
    servicer: NodeServicer
    http: httpx.AsyncClient
    channels: list[object]
    shipper: LogShipper
    bus: EventBus | None  # owned (closed on stop); None when shared

    @property
    def port(self) -> int:
        return self.grpc.port

    async def stop(self, grace: float = 1.0) -> None:
        await self.grpc.stop(grace=grace)
        logging.getLogger().removeHandler(self.shipper.handler)
        await self.shipper.stop()
        if self.bus is not None:
            await self.bus.close()
        await self.http.aclose()
        # Executors that hold connections (sql's pools) close them.
        await self.servicer.runner.registry.close()
        for channel in self.channels:
            await channel.close()  # type: ignore[attr-defined]


async def serve(settings: NodeServiceSettings, *, bus: EventBus | None = None) -> NodeService:
    """Start a node replica; pass `bus` to share it (embedded mode)."""
    owned_bus = None
    if bus is None:
        bus = owned_bus = create_bus(settings.broker_url, settings.broker_prefix)
        await bus.connect()
    # What node code logs inside an attempt reaches the log service with its ids.
    shipper = LogShipper(bus, service="node")
    await shipper.start()
    logging.getLogger().addHandler(shipper.handler)
    token = settings.service_token
    tls = TlsFiles.from_settings(settings)
    ai_channel = create_channel(settings.ai_address, service_token=token, tls=tls)
    tool_channel = create_channel(settings.tool_address, service_token=token, tls=tls)
    workflow_channel = create_channel(settings.workflow_address, service_token=token, tls=tls)
    # Redirects are followed by the executor itself so each hop passes the address guard.
    http = httpx.AsyncClient(follow_redirects=False)
    services = Services(
        ai=GrpcAiClient(ai_channel, settings.grpc_deadline_s),
        tools=GrpcToolClient(tool_channel, settings.grpc_deadline_s),
        workflows=GrpcWorkflowClient(
            workflow_channel, settings.grpc_deadline_s, settings.child_deadline_s
        ),
        http=http,
        settings=settings.executor_settings(),
    )
    servicer = NodeServicer(NodeRunner(default_registry(), services), settings.max_concurrent_nodes)
    try:
        server = await start_grpc_server(
            "node",
            [node_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name],
            lambda s: node_pb2_grpc.add_NodeServiceServicer_to_server(servicer, s),
            host=settings.bind_host,
            port=settings.port_for("node"),
            service_token=token,
            tls=tls,
        )
    except BaseException:
        # A failed start (a port taken) leaves nothing running or attached behind it.
        logging.getLogger().removeHandler(shipper.handler)
        await shipper.stop()
        await http.aclose()
        for channel in (ai_channel, tool_channel, workflow_channel):
            await channel.close()
        if owned_bus is not None:
            await owned_bus.close()
        raise
    return NodeService(
        settings,
        server,
        servicer,
        http,
        [ai_channel, tool_channel, workflow_channel],
        shipper,
        owned_bus,
    )


def main() -> None:
    run_service("node", NodeServiceSettings(), serve)
