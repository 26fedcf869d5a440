"""Wires the log service: settings → database, broker → consumer, retention, gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field

import grpc
from heddle.v1 import log_pb2, log_pb2_grpc, workflow_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.bus import EventBus, create_bus
from libs.common.db import create_engine, session_factory
from libs.common.grpcutil import GrpcServer, TlsFiles, create_channel, start_grpc_server
from libs.common.runtime import run_service
from libs.migrations import upgrade
from services.log import models  # noqa: F401  (registers the table)
from services.log.consumer import LogConsumer
from services.log.event_waits import EventWaitIndexer, grpc_submitter
from services.log.retention import run_retention
from services.log.servicer import LogServicer
from services.log.settings import LogSettings
from services.log.webhooks import DeliveryPolicy, WebhookDeliverer

log = logging.getLogger(__name__)

SERVICE_NAME = log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name


@dataclass
class LogServer(GrpcServer):
    """The running server plus the consumer and sweep it stops, and what it owns."""

    consumer: LogConsumer | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    webhooks: WebhookDeliverer | None = None
    event_waits: EventWaitIndexer | None = None
    workflow_channel: grpc.aio.Channel | None = None
    engine: AsyncEngine | None = None
    owned_bus: EventBus | None = None

    async def stop(self, grace: float = 2.0) -> None:
        await super().stop(grace)
        if self.consumer is not None:
            await self.consumer.stop()
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.event_waits is not None:
            await self.event_waits.stop()
        if self.workflow_channel is not None:
            await self.workflow_channel.close()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.owned_bus is not None:
            await self.owned_bus.close()
        if self.engine is not None:
            await self.engine.dispose()


async def serve(settings: LogSettings, *, bus: EventBus | None = None) -> LogServer:
    """Start the log service; pass bus to share one (embedded mode)."""
    engine = create_engine(settings.database_url)
    owned_bus = None
    consumer = None
    webhooks = None
    event_waits = None
    workflow_channel = create_channel(
        settings.workflow_address,
        service_token=settings.service_token,
        tls=TlsFiles.from_settings(settings),
    )
    try:
        await upgrade(engine)
        if bus is None:
            bus = owned_bus = create_bus(settings.broker_url, settings.broker_prefix)
        await bus.connect()
        sessions = session_factory(engine)
        consumer = LogConsumer(
            sessions,
            bus,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            records_queue=settings.records_queue,
            events_queue=settings.events_queue,
        )
        await consumer.start()
        if settings.webhooks_enabled:
            webhooks = WebhookDeliverer(
                sessions, bus, settings.secrets_key, _delivery_policy(settings)
            )
            await webhooks.start()
        # wait_event nodes resume through SubmitInput, as a human's input does.
        event_waits = EventWaitIndexer(
            sessions,
            bus,
            grpc_submitter(
                workflow_pb2_grpc.WorkflowServiceStub(workflow_channel), settings.grpc_deadline_s
            ),
            queue=settings.event_waits_queue,
        )
        await event_waits.start()
        servicer = LogServicer(
            sessions,
            default_page_size=settings.default_page_size,
            max_page_size=settings.max_page_size,
        )
        server = await start_grpc_server(
            "log",
            [SERVICE_NAME],
            lambda s: log_pb2_grpc.add_LogServiceServicer_to_server(servicer, s),
            host=settings.bind_host,
            port=settings.port_for("log"),
            service_token=settings.service_token,
            tls=TlsFiles.from_settings(settings),
        )
    except BaseException:
        if consumer is not None:
            await consumer.stop()
        if webhooks is not None:
            await webhooks.stop()
        if event_waits is not None:
            await event_waits.stop()
        await workflow_channel.close()
        if owned_bus is not None:
            await owned_bus.close()
        await engine.dispose()
        raise
    retention = asyncio.create_task(
        run_retention(
            sessions,
            dt.timedelta(days=settings.retention_days),
            settings.retention_batch_rows,
            settings.retention_interval_s,
        ),
        name="log-retention",
    )
    log.info("log service ready")
    return LogServer(
        name=server.name,
        server=server.server,
        port=server.port,
        health=server.health,
        consumer=consumer,
        tasks=[retention],
        webhooks=webhooks,
        event_waits=event_waits,
        workflow_channel=workflow_channel,
        engine=engine,
        owned_bus=owned_bus,
    )


def _delivery_policy(settings: LogSettings) -> DeliveryPolicy:
    return DeliveryPolicy(
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
        backoff_max_s=settings.webhook_backoff_max_s,
        timeout_s=settings.webhook_timeout_s,
        sweep_interval_s=settings.webhook_sweep_interval_s,
        concurrency=settings.webhook_concurrency,
        allow_hosts=tuple(settings.http_allow_hosts),
        queue=settings.webhook_queue,
    )


def main() -> None:
    run_service("log", LogSettings(), serve)
