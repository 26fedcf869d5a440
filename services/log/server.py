"""Wires the log service: settings → database, broker → consumer, retention, gRPC server."""

from __future__ import annotations

import datetime as dt
import logging

from heddle.v1 import log_pb2, log_pb2_grpc, workflow_pb2_grpc

from libs.common.bus import EventBus
from libs.common.db import session_factory
from libs.common.grpcutil import GrpcServer, TlsFiles
from libs.common.runtime import run_service
from libs.common.service import RunningService, ServiceStack, start_service
from libs.migrations import upgrade
from services.log import models  # noqa: F401  (registers the table)
from services.log.consumer import LogConsumer
from services.log.event_waits import EventWaitIndexer, grpc_submitter
from services.log.retention import sweep
from services.log.servicer import LogServicer
from services.log.settings import LogSettings
from services.log.subscriptions import WebhookSubscriptions
from services.log.webhooks import DeliveryPolicy, WebhookDeliverer

log = logging.getLogger(__name__)

SERVICE_NAME = log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name


class LogServer(RunningService):
    """The running log service; its stack stops the consumers and the sweeps."""

    def __init__(
        self,
        stack: ServiceStack,
        grpc_server: GrpcServer,
        consumer: LogConsumer,
        webhooks: WebhookDeliverer | None,
        event_waits: EventWaitIndexer,
        subscriptions: WebhookSubscriptions,
    ) -> None:
        super().__init__(stack, grpc_server)
        self.consumer = consumer
        self.webhooks = webhooks
        self.subscriptions = subscriptions
        self.event_waits = event_waits


async def serve(settings: LogSettings, *, bus: EventBus | None = None) -> LogServer:
    """Start the log service; pass bus to share one (embedded mode)."""

    async def build(stack: ServiceStack) -> LogServer:
        engine = stack.database(settings.database_url)
        tls = TlsFiles.from_settings(settings)
        workflow_channel = stack.channel(
            settings.workflow_address, service_token=settings.service_token, tls=tls
        )
        await upgrade(engine)
        shared_bus = await stack.bus(settings.broker_url, settings.broker_prefix, bus)
        sessions = session_factory(engine)
        consumer = LogConsumer(
            sessions,
            shared_bus,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            records_queue=settings.records_queue,
            events_queue=settings.events_queue,
        )
        await consumer.start()
        stack.callback(consumer.stop)
        webhooks = None
        if settings.webhooks_enabled:
            webhooks = WebhookDeliverer(
                sessions, shared_bus, settings.secrets_key, _delivery_policy(settings)
            )
            await webhooks.start()
            stack.callback(webhooks.stop)
        subscriptions = WebhookSubscriptions(
            sessions,
            shared_bus if webhooks is not None else None,
            settings.secrets_key,
            queue=settings.webhook_queue,
            grace_s=settings.webhook_binding_grace_s,
            changed=webhooks.forget if webhooks is not None else lambda tenant_id: None,
        )
        if webhooks is not None:
            stack.periodic(
                "webhook-bindings",
                settings.webhook_reconcile_interval_s,
                subscriptions.reconcile,
                immediately=True,
            )
        # wait_event nodes resume through SubmitInput, as a human's input does: from the
        # indexer (an event came first) and from SendEvent (a node waited first).
        submit = grpc_submitter(
            workflow_pb2_grpc.WorkflowServiceStub(workflow_channel), settings.grpc_deadline_s
        )
        event_waits = EventWaitIndexer(
            sessions, shared_bus, submit, queue=settings.event_waits_queue
        )
        await event_waits.start()
        stack.callback(event_waits.stop)
        retention = dt.timedelta(days=settings.retention_days)
        stack.periodic(
            "log-retention",
            settings.retention_interval_s,
            lambda: sweep(sessions, retention, settings.retention_batch_rows),
            immediately=True,
        )
        servicer = LogServicer(
            sessions,
            subscriptions,
            default_page_size=settings.default_page_size,
            max_page_size=settings.max_page_size,
            submit=submit,
        )
        server = await stack.service_server(
            settings,
            "log",
            [SERVICE_NAME],
            lambda s: log_pb2_grpc.add_LogServiceServicer_to_server(servicer, s),
        )
        log.info("log service ready")
        return LogServer(stack, server, consumer, webhooks, event_waits, subscriptions)

    return await start_service("log", build)


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
