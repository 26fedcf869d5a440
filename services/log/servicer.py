"""LogService over gRPC: protobuf <-> repository queries, nothing more."""

from __future__ import annotations

import grpc
from heddle.v1 import events_pb2, log_pb2, log_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.errors import InvalidArgument
from libs.common.timeutil import field_datetime, to_timestamp
from services.log import repository
from services.log.models import DEFAULT_TENANT, LEVELS, LogRecordRow, normalize_level


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


class LogServicer(log_pb2_grpc.LogServiceServicer):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        default_page_size: int = 100,
        max_page_size: int = 1000,
    ) -> None:
        self._sessions = sessions
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

    async def QueryLogs(
        self, request: log_pb2.QueryLogsRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.QueryLogsResponse:
        query = self._query(request)
        async with self._sessions() as session:
            rows, next_token = await repository.query_records(session, query)
        return log_pb2.QueryLogsResponse(
            records=[to_proto(row) for row in rows], next_page_token=next_token
        )
