"""LogService over gRPC: protobuf <-> repository queries and webhook subscriptions."""

from __future__ import annotations

import grpc
from heddle.v1 import events_pb2, log_pb2, log_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.errors import FailedPrecondition, InvalidArgument
from libs.common.timeutil import field_datetime, to_timestamp
from services.log import repository
from services.log.event_waits import Submit, receive_event
from services.log.models import (
    DEFAULT_TENANT,
    LEVELS,
    LogRecordRow,
    WebhookDeliveryRow,
    WebhookRow,
    normalize_level,
)
from services.log.subscriptions import WebhookSpec, WebhookSubscriptions


def to_proto(row: LogRecordRow) -> events_pb2.LogRecord:
    record = events_pb2.LogRecord(
        execution_id=row.execution_id,
        node_id=row.node_id,
        attempt=row.attempt,
        level=row.level,
        message=row.message,
        trace_id=row.trace_id,
        logger=row.logger,
        service=row.service,
        fields_json=jsonutil.dumps(row.fields),
        tenant_id=row.tenant_id,
    )
    record.ts.CopyFrom(to_timestamp(row.ts))
    return record


def webhook_to_proto(row: WebhookRow) -> log_pb2.Webhook:
    webhook = log_pb2.Webhook(
        id=row.id,
        url=row.url,
        events=list(row.events or []),
        description=row.description,
        active=row.active,
    )
    if row.workflow_id is not None:
        webhook.workflow_id = row.workflow_id
    webhook.created_at.CopyFrom(to_timestamp(row.created_at))
    if row.updated_at is not None:
        webhook.updated_at.CopyFrom(to_timestamp(row.updated_at))
    return webhook


def delivery_to_proto(row: WebhookDeliveryRow) -> log_pb2.WebhookDelivery:
    delivery = log_pb2.WebhookDelivery(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
    )
    if row.last_status_code is not None:
        delivery.last_status_code = row.last_status_code
    delivery.created_at.CopyFrom(to_timestamp(row.created_at))
    if row.delivered_at is not None:
        delivery.delivered_at.CopyFrom(to_timestamp(row.delivered_at))
    return delivery


def spec_from_proto(spec: log_pb2.WebhookSpec) -> WebhookSpec:
    return WebhookSpec(
        url=spec.url,
        events=list(spec.events),
        workflow_id=spec.workflow_id if spec.HasField("workflow_id") else None,
        secret=spec.secret,
        description=spec.description,
        active=spec.active,
    )


class LogServicer(log_pb2_grpc.LogServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        webhooks: WebhookSubscriptions,
        *,
        default_page_size: int = 100,
        max_page_size: int = 1000,
        submit: Submit | None = None,
    ) -> None:
        self._sessions = sessions
        self._webhooks = webhooks
        #: How SendEvent resumes a waiting node (SubmitInput); None: SendEvent is unavailable.
        self._submit = submit
        self._default_page_size = default_page_size
        self._max_page_size = max_page_size

    def _query(self, request: log_pb2.QueryLogsRequest) -> repository.LogQuery:
        min_level_no = 0
        if request.level:
            level = normalize_level(request.level)
            if level is None:
                raise InvalidArgument(
                    f"level: unknown level {request.level!r}",
                    details=[{"path": "level", "message": f"one of {', '.join(LEVELS)}"}],
                )
            min_level_no = LEVELS[level]
        if request.page_size < 0:
            raise InvalidArgument(
                "page_size: must not be negative",
                details=[{"path": "page_size", "message": "negative"}],
            )
        return repository.LogQuery(
            tenant_id=request.tenant_id or DEFAULT_TENANT,
            execution_id=request.execution_id,
            node_id=request.node_id,
            min_level_no=min_level_no,
            since=field_datetime(request, "since"),
            until=field_datetime(request, "until"),
            text=request.text,
            page_size=min(request.page_size or self._default_page_size, self._max_page_size),
            page_token=request.page_token,
        )

    async def SendEvent(
        self, request: log_pb2.SendEventRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.SendEventResponse:
        if self._submit is None:
            raise FailedPrecondition("this log service resumes no wait_event nodes")
        problems = [
            {"path": path, "message": message}
            for path, message, bad in (
                ("event_id", "required", not request.event_id),
                ("name", "required", not request.name),
                ("keep_s", "must be > 0", not request.keep_s > 0),
            )
            if bad
        ]
        if problems:
            raise InvalidArgument(
                "; ".join(f"{p['path']}: {p['message']}" for p in problems), details=problems
            )
        try:
            data = jsonutil.loads(request.data_json) if request.data_json else None
        except ValueError as error:
            raise InvalidArgument(f"data_json: not JSON: {error}") from None
        resumed, row = await receive_event(
            self._sessions,
            self._submit,
            event_id=request.event_id,
            tenant_id=request.tenant_id or DEFAULT_TENANT,
            name=request.name,
            correlation_key=request.correlation_key,
            data=data,
            keep_s=request.keep_s,
        )
        reply = log_pb2.SendEventResponse(resumed=[log_pb2.ResumedNode(**item) for item in resumed])
        if not resumed:
            reply.kept_until.CopyFrom(to_timestamp(row.expires_at))
        return reply

    async def QueryLogs(
        self, request: log_pb2.QueryLogsRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.QueryLogsResponse:
        query = self._query(request)
        async with self._sessions() as session:
            rows, next_token = await repository.query_records(session, query)
        return log_pb2.QueryLogsResponse(
            records=[to_proto(row) for row in rows], next_page_token=next_token
        )

    # -- webhook subscriptions -----------------------------------------------------------

    def _page_size(self, page_size: int) -> int:
        if page_size < 0:
            raise InvalidArgument(
                "page_size: must not be negative",
                details=[{"path": "page_size", "message": "negative"}],
            )
        return min(page_size or self._default_page_size, self._max_page_size)

    async def CreateWebhook(
        self, request: log_pb2.CreateWebhookRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.CreateWebhookResponse:
        row, secret = await self._webhooks.create(
            request.tenant_id or DEFAULT_TENANT, spec_from_proto(request.spec)
        )
        return log_pb2.CreateWebhookResponse(webhook=webhook_to_proto(row), secret=secret)

    async def UpdateWebhook(
        self, request: log_pb2.UpdateWebhookRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.Webhook:
        row = await self._webhooks.update(
            request.tenant_id or DEFAULT_TENANT, request.id, spec_from_proto(request.spec)
        )
        return webhook_to_proto(row)

    async def DeleteWebhook(
        self, request: log_pb2.WebhookRef, context: grpc.aio.ServicerContext
    ) -> log_pb2.DeleteWebhookResponse:
        await self._webhooks.delete(request.tenant_id or DEFAULT_TENANT, request.id)
        return log_pb2.DeleteWebhookResponse()

    async def GetWebhook(
        self, request: log_pb2.WebhookRef, context: grpc.aio.ServicerContext
    ) -> log_pb2.Webhook:
        return webhook_to_proto(
            await self._webhooks.get(request.tenant_id or DEFAULT_TENANT, request.id)
        )

    async def ListWebhooks(
        self, request: log_pb2.ListWebhooksRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ListWebhooksResponse:
        rows, total = await self._webhooks.page(
            request.tenant_id or DEFAULT_TENANT, request.page, self._page_size(request.page_size)
        )
        return log_pb2.ListWebhooksResponse(
            webhooks=[webhook_to_proto(row) for row in rows], total=total
        )

    async def ListWebhookDeliveries(
        self, request: log_pb2.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ListWebhookDeliveriesResponse:
        rows, total = await self._webhooks.deliveries(
            request.tenant_id or DEFAULT_TENANT,
            request.webhook_id,
            request.status,
            request.page,
            self._page_size(request.page_size),
        )
        return log_pb2.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_proto(row) for row in rows], total=total
        )
