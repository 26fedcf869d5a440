"""Wires the worker side of a workflow replica: the pool of connected workers, the presence
board, the relay to other replicas' workers, the tenants' custom types in the catalog, and
the worker endpoint (its own gRPC port: workers authenticate with API keys, not with the
service token, so they never get a credential to the cluster's internal port)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from heddle.v1 import worker_pb2, worker_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.grpcutil import GrpcServer, start_grpc_server
from services.workflow.catalog import CustomTypes, NodeCatalog
from services.workflow.dispatcher import NodeDispatcher, WorkerRelay
from services.workflow.settings import WorkflowSettings
from services.workflow.worker_presence import PresenceBoard
from services.workflow.worker_servicer import WorkerServicer
from services.workflow.workers import WorkerPool

#: Default worker port: the replica's gRPC port plus this.
WORKER_PORT_OFFSET = 100


@dataclass
class WorkerEndpoint:
    pool: WorkerPool
    board: PresenceBoard
    relay: WorkerRelay
    grpc: GrpcServer

    @property
    def port(self) -> int:
        return self.grpc.port

    async def stop(self) -> None:
        await self.grpc.stop(grace=0.5)
        await self.pool.close()
        await self.board.stop()
        await self.relay.close()


def _advertised(settings: WorkflowSettings, port: int) -> str:
    if settings.worker_advertise_address:
        return settings.worker_advertise_address
    host = settings.bind_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"{host}:{port}"


async def start_workers(
    settings: WorkflowSettings,
    sessions: async_sessionmaker[AsyncSession],
    dispatcher: NodeDispatcher,
    catalog: NodeCatalog,
) -> WorkerEndpoint:
    pool = WorkerPool(
        schedule_to_start_s=settings.worker_schedule_to_start_timeout_s,
        heartbeat_timeout_s=settings.worker_heartbeat_timeout_s,
    )
    board = PresenceBoard(
        sessions,
        pool,
        replica_id=settings.replica_id,
        address="",
        refresh_s=settings.worker_presence_refresh_s,
    )
    pool.on_change = board.changed
    relay = WorkerRelay(
        board.lookup,
        service_token=settings.service_token,
        default_timeout_s=settings.node_default_timeout_s,
    )
    pool.remote = relay
    dispatcher.workers = pool
    dispatcher.relay = relay
    catalog.custom = CustomTypes(sessions, board.connected_types)
    servicer = WorkerServicer(settings, sessions, pool, catalog)
    port = settings.worker_port
    if port is None:
        base = settings.port_for("workflow")
        port = base + WORKER_PORT_OFFSET if base else 0
    server = await start_grpc_server(
        "worker",
        [worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name],
        lambda s: worker_pb2_grpc.add_WorkerServiceServicer_to_server(servicer, s),
        host=settings.bind_host,
        port=port,
        # Not the cluster's mutual TLS: workers outside hold no client certificate (TLS at
        # the load balancer in front of this port; see the README).
        tls=None,
    )
    board.address = _advertised(settings, server.port)
    board.start()
    return WorkerEndpoint(pool, board, relay, server)
