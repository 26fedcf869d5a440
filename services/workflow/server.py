"""Wires the workflow service: database, node dispatcher, engine, relay, trigger consumer,
and the gRPC server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from heddle.v1 import events_pb2, workflow_pb2, workflow_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.bus import (
    TRIGGERS_EXCHANGE,
    EventBus,
    Message,
    Subscription,
    create_bus,
    traced,
)
from libs.common.db import create_engine, session_factory
from libs.common.grpcutil import GrpcServer, TlsFiles, start_grpc_server
from libs.common.kv import KV, create_kv
from libs.common.runtime import run_service
from libs.migrations import upgrade
from services.workflow import models  # noqa: F401  (registers the tables)
from services.workflow.catalog import NodeCatalog, ToolCatalog
from services.workflow.dispatcher import NodeDispatcher
from services.workflow.engine import Engine
from services.workflow.events import EventNotifier
from services.workflow.relay import OutboxRelay
from services.workflow.servicer import WorkflowServicer, start_from_trigger
from services.workflow.settings import WorkflowSettings
from services.workflow.worker_server import WorkerEndpoint, start_workers
from services.workflow.workflows import WorkflowStore

log = logging.getLogger(__name__)

TRIGGERS_QUEUE = "workflow.triggers"


@dataclass
class WorkflowService:
    """A running workflow service and everything it owns."""

    settings: WorkflowSettings
    engine: Engine
    relay: OutboxRelay
    grpc: GrpcServer
    bus: EventBus
    own_bus: bool
    kv: KV
    own_kv: bool
    subscription: Subscription
    dispatcher: NodeDispatcher
    db: AsyncEngine
    workers: WorkerEndpoint | None = None

    @property
    def port(self) -> int:
        return self.grpc.port

    async def stop(self) -> None:
        await self.subscription.cancel()
        if self.workers is not None:
            await self.workers.stop()
        await self.grpc.stop(grace=1.0)
        await self.engine.stop()
        await self.relay.stop()
        await self.dispatcher.close()
        if self.own_bus:
            await self.bus.close()
        if self.own_kv:
            await self.kv.close()
        await self.db.dispose()


async def serve(
    settings: WorkflowSettings, *, bus: EventBus | None = None, kv: KV | None = None
) -> WorkflowService:
    """Start the workflow service; pass `bus`/`kv` to share them (embedded mode), else they are
    built from the settings and closed on stop."""
    db = create_engine(settings.database_url)
    own_bus, own_kv = bus is None, kv is None
    dispatcher: NodeDispatcher | None = None
    workers: WorkerEndpoint | None = None
    try:
        await upgrade(db)
        sessions = session_factory(db)
        if bus is None:
            bus = create_bus(settings.broker_url, settings.broker_prefix)
            await bus.connect()
        if kv is None:
            kv = create_kv(settings.redis_url)
        dispatcher = NodeDispatcher(
            settings.node_addresses,
            batch_size=settings.dispatch_batch_size,
            default_timeout_s=settings.node_default_timeout_s,
            service_token=settings.service_token,
            tls=TlsFiles.from_settings(settings),
        )
        catalog = NodeCatalog(
            dispatcher,
            tools=ToolCatalog(
                settings.tool_address,
                service_token=settings.service_token,
                tls=TlsFiles.from_settings(settings),
            ),
        )
        engine = Engine(settings, sessions, dispatcher, catalog, kv, EventNotifier())
        relay = OutboxRelay(sessions, bus)
        engine.relay = relay
        store = WorkflowStore(settings, sessions, catalog)
        workers = await start_workers(settings, sessions, dispatcher, catalog)
        servicer = WorkflowServicer(engine, store)
        server = await start_grpc_server(
            "workflow",
            [workflow_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name],
            lambda s: workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(servicer, s),
            host=settings.bind_host,
            port=settings.port_for("workflow"),
            service_token=settings.service_token,
            tls=TlsFiles.from_settings(settings),
        )
    except BaseException:
        # A failed start (a port taken, the database down) leaves nothing open behind it.
        if workers is not None:
            await workers.stop()
        if dispatcher is not None:
            await dispatcher.close()
        if own_bus and bus is not None:
            await bus.close()
        if own_kv and kv is not None:
            await kv.close()
        await db.dispose()
        raise

    async def on_trigger(message: Message) -> None:
        fire = events_pb2.TriggerFire.FromString(message.body)
        await start_from_trigger(engine, fire)

    subscription = await bus.subscribe(
        TRIGGERS_EXCHANGE,
        ["trigger.#"],
        traced(on_trigger, "workflow", TRIGGERS_QUEUE),
        queue=TRIGGERS_QUEUE,
        prefetch=16,
    )

    relay.start()
    await engine.start()
    return WorkflowService(
        settings,
        engine,
        relay,
        server,
        bus,
        own_bus,
        kv,
        own_kv,
        subscription,
        dispatcher,
        db,
        workers,
    )


def main() -> None:
    run_service("workflow", WorkflowSettings(), serve)
