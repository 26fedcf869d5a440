"""Ships the log records written inside a node attempt to the broker, for the log service.

`LogShipper.handler` is a `logging.Handler`: for a record emitted while
`libs.common.logging.execution_id_var` is set it builds a `LogRecord` protobuf and puts it on
a bounded queue; a task drains the queue and publishes each to exchange `heddle.logs` with
routing key `log.<level>`. Logging never waits for the broker: when the queue is full the
record is dropped and counted (`heddle_log_records_dropped_total`). Records from other
threads are handed to the loop thread safely. Records emitted by the drain task itself carry
no execution id, so shipping never ships its own logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from typing import Any

from heddle.v1 import events_pb2
from prometheus_client import Counter

from libs.common import jsonutil
from libs.common.bus import LOGS_EXCHANGE, EventBus
from libs.common.logging import attempt_var, execution_id_var, node_id_var
from libs.common.timeutil import to_timestamp

log = logging.getLogger(__name__)

RECORDS_DROPPED = Counter(
    "heddle_log_records_dropped_total", "Log records not shipped because the queue was full."
)
RECORDS_SHIPPED = Counter("heddle_log_records_shipped_total", "Log records published.")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


def _level_name(levelno: int) -> str:
    for number in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= number:
            return _LEVEL_NAMES[number]
    return "debug"


def _trace_id() -> str:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a dependency
        return ""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


class _ShipHandler(logging.Handler):
    def __init__(self, shipper: LogShipper, level: int) -> None:
        super().__init__(level)
        self._shipper = shipper

    def emit(self, record: logging.LogRecord) -> None:
        execution_id = execution_id_var.get()
        if execution_id is None:
            return
        try:
            message = self._shipper.to_message(record, execution_id)
        except Exception:
            self.handleError(record)
            return
        self._shipper.enqueue(message)


class LogShipper:
    """Owns the queue, the drain task and the handler; `start()` in the service's loop."""

    def __init__(
        self,
        bus: EventBus,
        *,
        service: str,
        tenant_id: str = "",
        max_queue: int = 10_000,
        level: int = logging.INFO,
        exchange: str = LOGS_EXCHANGE,
    ) -> None:
        self._bus = bus
        self.service = service
        self.tenant_id = tenant_id
        self._exchange = exchange
        self._queue: asyncio.Queue[events_pb2.LogRecord] = asyncio.Queue(max_queue)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.handler: logging.Handler = _ShipHandler(self, level)

    def to_message(self, record: logging.LogRecord, execution_id: str) -> events_pb2.LogRecord:
        fields: dict[str, Any] = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        }
        if record.exc_info:
            fields["exc"] = logging.Formatter().formatException(record.exc_info)
        message = events_pb2.LogRecord(
            execution_id=execution_id,
            node_id=node_id_var.get() or "",
            attempt=attempt_var.get() or 0,
            level=_level_name(record.levelno),
            message=record.getMessage(),
            trace_id=_trace_id(),
            logger=record.name,
            service=self.service,
            fields_json=jsonutil.dumps(fields) if fields else b"",
            tenant_id=self.tenant_id,
        )
        message.ts.CopyFrom(to_timestamp(dt.datetime.fromtimestamp(record.created, dt.UTC)))
        return message

    def enqueue(self, message: events_pb2.LogRecord) -> None:
        """Queue a record from any thread; drop and count it when the queue is full."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._drop()
            return
        if threading.get_ident() == self._loop_thread:
            self._put(message)
        else:
            loop.call_soon_threadsafe(self._put, message)

    def _put(self, message: events_pb2.LogRecord) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        RECORDS_DROPPED.inc()

    async def start(self) -> None:
        """Start draining; records emitted before this are dropped (and counted)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # A task of its own context: nothing it logs carries an execution id.
        token = execution_id_var.set(None)
        try:
            self._task = asyncio.create_task(self._drain(), name="log-shipper")
        finally:
            execution_id_var.reset(token)

    async def _drain(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._bus.publish(
                    self._exchange, f"log.{message.level}", message.SerializeToString()
                )
                RECORDS_SHIPPED.inc()
            except Exception:
                self._drop()
                log.warning("shipping a log record failed", exc_info=True)
            finally:
                self._queue.task_done()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Ship what is queued (for at most timeout_s), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._loop = None

    @property
    def pending(self) -> int:
        """Records queued and not yet published."""
        return self._queue.qsize()
