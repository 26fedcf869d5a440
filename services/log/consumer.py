"""Consumes log records from the broker and writes them in batches.

Each handler adds its record to the current batch and waits for that batch to be committed,
so a message is acknowledged only once its row is stored (the bus acks when the handler
returns). A batch is written, as one multi-row INSERT, when it reaches batch_size or
flush_interval_s after its first record, whichever comes first; the queue's prefetch is
larger than a batch so that batches can fill. A failed write fails every handler of the
batch and the broker redelivers their messages (records are stored at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any

from google.protobuf.message import DecodeError
from heddle.v1 import events_pb2
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.bus import (
    EVENTS_EXCHANGE,
    LOGS_EXCHANGE,
    EventBus,
    Message,
    Subscription,
    traced,
)
from libs.common.db import utcnow
from libs.common.timeutil import from_timestamp
from services.log import repository
from services.log.models import DEFAULT_TENANT, LEVELS, normalize_level

log = logging.getLogger(__name__)

RECORDS_STORED = Counter("heddle_log_records_stored_total", "Log records written.")
RECORDS_REJECTED = Counter(
    "heddle_log_records_rejected_total", "Messages dropped because they did not decode."
)


def _timestamp(stamp: Any) -> dt.datetime:
    if stamp.seconds or stamp.nanos:
        return from_timestamp(stamp)
    return utcnow()


def _row(
    *,
    tenant_id: str,
    execution_id: str,
    node_id: str,
    attempt: int,
    level: str,
    message: str,
    ts: dt.datetime,
    trace_id: str,
    logger: str,
    service: str,
    fields: Any,
) -> dict[str, Any]:
    name = normalize_level(level) or "info"
    return {
        "tenant_id": tenant_id or DEFAULT_TENANT,
        "execution_id": execution_id,
        "node_id": node_id,
        "attempt": attempt,
        "level": name,
        "level_no": LEVELS[name],
        "message": message,
        "ts": ts,
        "trace_id": trace_id,
        "logger": logger[:200],
        "service": service[:64],
        "fields": fields,
    }


def row_from_log_record(body: bytes) -> dict[str, Any]:
    """The row of a `heddle.logs` message (a LogRecord)."""
    record = events_pb2.LogRecord()
    record.ParseFromString(body)
    return _row(
        tenant_id=record.tenant_id,
        execution_id=record.execution_id,
        node_id=record.node_id,
        attempt=record.attempt,
        level=record.level,
        message=record.message,
        ts=_timestamp(record.ts),
        trace_id=record.trace_id,
        logger=record.logger,
        service=record.service,
        fields=jsonutil.loads(record.fields_json),
    )


def row_from_log_event(body: bytes) -> dict[str, Any] | None:
    """The row of a `log` event of `heddle.events` (data: level, message, logger, fields)."""
    event = events_pb2.Event()
    event.ParseFromString(body)
    if event.type != "log":
        return None
    data = jsonutil.loads(event.data_json) or {}
    if not isinstance(data, dict):
        data = {"message": str(data)}
    fields = data.get("fields")
    return _row(
        tenant_id=event.tenant_id,
        execution_id=event.execution_id,
        node_id=event.node_id,
        attempt=int(data.get("attempt") or 0),
        level=str(data.get("level") or "info"),
        message=str(data.get("message") or ""),
        ts=_timestamp(event.ts),
        trace_id=event.trace_id,
        logger=str(data.get("logger") or ""),
        service=str(data.get("service") or "workflow"),
        fields=fields if fields is not None else None,
    )


class LogConsumer:
    """Batches records from the broker into the database; see the module docstring."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.25,
        records_queue: str = "log.records",
        events_queue: str | None = "log.events",
        records_exchange: str = LOGS_EXCHANGE,
        records_binding: str = "#",
        events_exchange: str = EVENTS_EXCHANGE,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._records_queue = records_queue
        self._events_queue = events_queue
        self._records_exchange = records_exchange
        self._records_binding = records_binding
        self._events_exchange = events_exchange
        self._rows: list[dict[str, Any]] = []
        self._batch_done: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._subscriptions: list[Subscription] = []
        self.batches_written = 0

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="log-flusher")
        prefetch = self.batch_size * 2
        self._subscriptions.append(
            await self._bus.subscribe(
                self._records_exchange,
                [self._records_binding],
                traced(self._on_record, "log", self._records_queue),
                queue=self._records_queue,
                prefetch=prefetch,
            )
        )
        if self._events_queue:
            self._subscriptions.append(
                await self._bus.subscribe(
                    self._events_exchange,
                    ["log"],
                    traced(self._on_event, "log", self._events_queue),
                    queue=self._events_queue,
                    prefetch=prefetch,
                )
            )

    async def stop(self) -> None:
        """Write what is buffered, then stop consuming."""
        await self.flush()
        for subscription in self._subscriptions:
            await subscription.cancel()
        self._subscriptions.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None

    async def _on_record(self, message: Message) -> None:
        try:
            row = row_from_log_record(message.body)
        except (DecodeError, ValueError):
            # Redelivering a message that cannot decode would never help: drop it.
            RECORDS_REJECTED.inc()
            log.warning("undecodable log record dropped", extra={"key": message.routing_key})
            return
        await self._add(row)

    async def _on_event(self, message: Message) -> None:
        try:
            row = row_from_log_event(message.body)
        except (DecodeError, ValueError):
            RECORDS_REJECTED.inc()
            log.warning("undecodable log event dropped", extra={"key": message.routing_key})
            return
        if row is not None:
            await self._add(row)

    async def _add(self, row: dict[str, Any]) -> None:
        if self._batch_done is None:
            self._batch_done = asyncio.get_running_loop().create_future()
        done = self._batch_done
        self._rows.append(row)
        if len(self._rows) >= self.batch_size:
            await self._write_current()
        else:
            self._wake.set()
        # Shielded: a cancelled handler must not cancel the batch of the others.
        await asyncio.shield(done)

    async def flush(self) -> None:
        """Write the current batch now."""
        await self._write_current()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.flush_interval_s)
            await self._write_current()

    async def _write_current(self) -> None:
        rows, done = self._rows, self._batch_done
        self._rows, self._batch_done = [], None
        if not rows or done is None:
            return
        try:
            async with self._sessions() as session, session.begin():
                await repository.insert_records(session, rows)
        except Exception as error:
            log.exception("writing a batch of log records failed", extra={"rows": len(rows)})
            if not done.done():
                done.set_exception(error)
                # Every waiting handler re-raises it; mark it retrieved for the others.
                done.exception()
            return
        self.batches_written += 1
        RECORDS_STORED.inc(len(rows))
        if not done.done():
            done.set_result(None)
