"""Wires the workflow service: database, node dispatcher, engine, relay, trigger consumer,
and the gRPC server."""

from __future__ import annotations

import logging

from heddle.v1 import workflow_pb2, workflow_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common import memdebug
from libs.common.bus import EventBus
from libs.common.db import session_factory
from libs.common.grpcutil import GrpcServer, TlsFiles
from libs.common.kv import KV
from libs.common.memtrim import QuietTrim
from libs.common.runtime import run_service
from libs.common.service import RunningService, ServiceStack, start_service
from libs.migrations import upgrade
from services.workflow import models  # noqa: F401  (registers the tables)
from services.workflow.catalog import NodeCatalog, ToolCatalog
from services.workflow.completions import CompletionNotices
from services.workflow.dispatcher import NodeDispatcher
from services.workflow.engine import Engine
from services.workflow.events import EventNotifier
from services.workflow.relay import OutboxRelay
from services.workflow.servicer import WorkflowServicer
from services.workflow.settings import WorkflowSettings
from services.workflow.triggers import consume_triggers
from services.workflow.worker_server import WorkerEndpoint, start_workers
from services.workflow.workflows import WorkflowStore

log = logging.getLogger(__name__)


class WorkflowService(RunningService):
    """A running workflow service; its stack closes everything it opened."""

    def __init__(
        self,
        stack: ServiceStack,
        grpc_server: GrpcServer,
        *,
        settings: WorkflowSettings,
        engine: Engine,
        relay: OutboxRelay,
        bus: EventBus,
        kv: KV,
        dispatcher: NodeDispatcher,
        db: AsyncEngine,
        workers: WorkerEndpoint,
    ) -> None:
        super().__init__(stack, grpc_server)
        self.settings = settings
        self.engine = engine
        self.relay = relay
        self.bus = bus
        self.kv = kv
        self.dispatcher = dispatcher
        self.db = db
        self.workers = workers


async def serve(
    settings: WorkflowSettings, *, bus: EventBus | None = None, kv: KV | None = None
) -> WorkflowService:
    """Start the workflow service; pass `bus`/`kv` to share them (embedded mode), else they are
    built from the settings and closed on stop."""

    async def build(stack: ServiceStack) -> WorkflowService:
        db = stack.database(settings.database_url)
        await upgrade(db)
        sessions = session_factory(db)
        shared_bus = await stack.bus(settings.broker_url, settings.broker_prefix, bus)
        shared_kv = stack.kv(settings.redis_url, kv)
        tls = TlsFiles.from_settings(settings)
        dispatcher = NodeDispatcher(
            settings.node_addresses,
            batch_size=settings.dispatch_batch_size,
            default_timeout_s=settings.node_default_timeout_s,
            service_token=settings.service_token,
            tls=tls,
        )
        stack.callback(dispatcher.close)
        catalog = NodeCatalog(
            dispatcher,
            tools=ToolCatalog(settings.tool_address, service_token=settings.service_token, tls=tls),
        )
        engine = Engine(settings, sessions, dispatcher, catalog, shared_kv, EventNotifier())
        memdebug.add_probe("engine", engine.held)
        completions = CompletionNotices(settings.database_url, engine.notifier)
        if completions.enabled:
            completions.start()
            stack.callback(completions.stop)
            engine.completions = completions
        relay = OutboxRelay(sessions, shared_bus, linger_s=settings.outbox_linger_ms / 1000)
        engine.relay = relay
        store = WorkflowStore(settings, sessions, catalog, on_saved=engine.remember_saved)
        workers = await start_workers(settings, sessions, dispatcher, catalog)
        stack.callback(workers.stop)
        relay.start()
        stack.callback(relay.stop)
        await engine.start()
        stack.callback(engine.stop)
        subscription = await consume_triggers(shared_bus, engine)
        stack.callback(subscription.cancel)
        if settings.malloc_trim_interval_s > 0:
            trim = QuietTrim(
                busy_cpu_s=settings.malloc_trim_busy_cpu_s,
                quiet_fraction=settings.malloc_trim_quiet_fraction,
            )
            stack.periodic("malloc-trim", settings.malloc_trim_interval_s, trim.check)
        # Last: once it answers, everything behind it runs; on stop it is the first to go, so
        # no call reaches a stopped engine.
        servicer = WorkflowServicer(engine, store)
        server = await stack.service_server(
            settings,
            "workflow",
            [workflow_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name],
            lambda s: workflow_pb2_grpc.add_WorkflowServiceServicer_to_server(servicer, s),
            grace_s=1.0,
        )
        return WorkflowService(
            stack,
            server,
            settings=settings,
            engine=engine,
            relay=relay,
            bus=shared_bus,
            kv=shared_kv,
            dispatcher=dispatcher,
            db=db,
            workers=workers,
        )

    return await start_service("workflow", build)


def main() -> None:
    run_service("workflow", WorkflowSettings(), serve)
