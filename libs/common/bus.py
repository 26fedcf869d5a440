"""The event bus: topic exchanges with durable named queues (competing consumers).

`InProcessBus` is the embedded implementation; the RabbitMQ one has the same interface. A
handler that returns acknowledges its message; one that raises has it redelivered (up to
`max_deliveries`, then dead-lettered), so handlers must be idempotent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context

from libs.common.messages import (
    EVENTS_EXCHANGE,
    LOGS_EXCHANGE,
    TRIGGERS_EXCHANGE,
    Handler,
    Message,
    OutgoingMessage,
)
from libs.common.metrics import BUS_CONSUMED, BUS_QUEUE_DEPTH
from libs.common.tracing import (
    SERVICE_ATTRIBUTE,
    TRACEPARENT,
    current_traceparent,
    extract_context,
    spans_wanted,
    tracer,
)

__all__ = [
    "EVENTS_EXCHANGE",
    "LOGS_EXCHANGE",
    "TRIGGERS_EXCHANGE",
    "EventBus",
    "Handler",
    "InProcessBus",
    "Message",
    "OutgoingMessage",
    "Subscription",
    "create_bus",
    "publishing",
    "topic_matches",
    "traced",
]

log = logging.getLogger(__name__)
_TRACER = tracer(__name__)


@contextmanager
def publishing(
    exchange: str, service: str, parent: Context | None = None, messages: int = 1
) -> Iterator[dict[str, str]]:
    """A PRODUCER span `publish <exchange>` (child of parent, default the current span) for
    the duration of a publish; yields the headers that carry it to the consumers."""
    attributes: dict[str, str | int] = {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": exchange,
        "messaging.operation.type": "publish",
        SERVICE_ATTRIBUTE: service,
    }
    if messages != 1:
        attributes["messaging.batch.message_count"] = messages
    if not spans_wanted():
        # Nobody reads spans: carry the caller's trace context to the consumers, no span.
        span = trace.get_current_span(parent)
        yield {TRACEPARENT: current_traceparent(span)} if span.get_span_context().is_valid else {}
        return
    with _TRACER.start_as_current_span(
        f"publish {exchange}", context=parent, kind=trace.SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield {TRACEPARENT: current_traceparent(span)}


def traced(handler: Handler, service: str, queue: str = "") -> Handler:
    """handler, run in a CONSUMER span `process <exchange>` whose parent is the message's
    `traceparent` header; a message without one is handled untraced (no orphan traces)."""

    async def handle(message: Message) -> None:
        parent = extract_context(message.headers)
        if parent is None:
            await handler(message)
            return
        with _TRACER.start_as_current_span(
            f"process {message.exchange}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": message.exchange,
                "messaging.destination.subscription.name": queue,
                "messaging.rabbitmq.destination.routing_key": message.routing_key,
                "messaging.operation.type": "process",
                SERVICE_ATTRIBUTE: service,
            },
        ):
            await handler(message)

    return handle


class Subscription(Protocol):
    async def cancel(self) -> None: ...


class EventBus(Protocol):
    """Publish/subscribe over topic exchanges."""

    async def connect(self) -> None: ...

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Publish; returns once the broker has the message (publisher confirm)."""
        ...

    async def publish_many(self, exchange: str, messages: Sequence[OutgoingMessage]) -> None:
        """Publish several (routing key, body, headers) at once; returns once the broker has
        every one. Cheaper than a publish per message: no task per message here, confirms
        awaited together on RabbitMQ."""
        ...

    async def subscribe(
        self,
        exchange: str,
        binding_keys: list[str],
        handler: Handler,
        *,
        queue: str | None = None,
        prefetch: int = 64,
    ) -> Subscription:
        """Consume messages whose routing key matches a binding key (`*` one word, `#` any).

        Subscribers of the same named `queue` compete; `queue=None` gives this subscriber its
        own transient queue (fan-out to every such subscriber).
        """
        ...

    async def bind(self, exchange: str, queue: str, binding_key: str) -> None:
        """Route exchange's messages matching binding_key to the named queue too (declared
        if new; idempotent). Returns once the broker has the binding: a message published
        afterwards reaches the queue."""
        ...

    async def unbind(self, exchange: str, queue: str, binding_key: str) -> None:
        """Undo `bind` (nothing happens if there is no such binding)."""
        ...

    async def close(self) -> None: ...


@lru_cache(maxsize=256)
def _pattern(binding_key: str) -> re.Pattern[str]:
    words = []
    for word in binding_key.split("."):
        words.append({"*": r"[^.]+", "#": r".*"}.get(word, re.escape(word)))
    return re.compile("^" + r"\.".join(words).replace(r".*\.", r"(?:.*\.)?") + "$")


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more words."""
    return _pattern(binding_key).match(routing_key) is not None


class _Queue:
    def __init__(self, name: str, prefetch: int, max_deliveries: int, anonymous: bool) -> None:
        self.name = name
        label = "anonymous" if anonymous else name
        self.depth = BUS_QUEUE_DEPTH.labels(label)
        self.acked = BUS_CONSUMED.labels(label, "ack")
        self.requeued = BUS_CONSUMED.labels(label, "requeue")
        self.dead_lettered = BUS_CONSUMED.labels(label, "dead_letter")
        self.items: asyncio.Queue[Message] = asyncio.Queue()
        self.bindings: list[tuple[str, str]] = []
        self.consumers: dict[int, asyncio.Task[None]] = {}
        self.prefetch = prefetch
        self.max_deliveries = max_deliveries
        self.dead_letters: list[Message] = []


class InProcessBus:
    """An in-memory broker with the semantics the services rely on."""

    def __init__(self, max_deliveries: int = 5) -> None:
        self._queues: dict[str, _Queue] = {}
        self._ids = itertools.count(1)
        self._max_deliveries = max_deliveries

    async def connect(self) -> None:
        return None

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self._enqueue(Message(exchange, routing_key, body, dict(headers or {})))

    async def publish_many(self, exchange: str, messages: Sequence[OutgoingMessage]) -> None:
        for routing_key, body, headers in messages:
            self._enqueue(Message(exchange, routing_key, body, dict(headers)))

    def _enqueue(self, message: Message) -> None:
        for queue in self._queues.values():
            if any(
                ex == message.exchange and topic_matches(key, message.routing_key)
                for ex, key in queue.bindings
            ):
                queue.items.put_nowait(message)
                queue.depth.inc()

    async def subscribe(
        self,
        exchange: str,
        binding_keys: list[str],
        handler: Handler,
        *,
        queue: str | None = None,
        prefetch: int = 64,
    ) -> _InProcessSubscription:
        name = queue or f"anon.{next(self._ids)}"
        target = self._queues.get(name)
        if target is None:
            target = self._queues[name] = _Queue(
                name, prefetch, self._max_deliveries, anonymous=queue is None
            )
        for key in binding_keys:
            if (exchange, key) not in target.bindings:
                target.bindings.append((exchange, key))
        consumer_id = next(self._ids)
        task = asyncio.create_task(self._consume(target, handler), name=f"bus-consumer-{name}")
        target.consumers[consumer_id] = task
        return _InProcessSubscription(self, name, consumer_id, anonymous=queue is None)

    def _named_queue(self, name: str, prefetch: int = 64) -> _Queue:
        target = self._queues.get(name)
        if target is None:
            target = self._queues[name] = _Queue(
                name, prefetch, self._max_deliveries, anonymous=False
            )
        return target

    async def bind(self, exchange: str, queue: str, binding_key: str) -> None:
        target = self._named_queue(queue)
        if (exchange, binding_key) not in target.bindings:
            target.bindings.append((exchange, binding_key))

    async def unbind(self, exchange: str, queue: str, binding_key: str) -> None:
        target = self._queues.get(queue)
        if target is not None and (exchange, binding_key) in target.bindings:
            target.bindings.remove((exchange, binding_key))

    def bindings(self, queue: str) -> list[tuple[str, str]]:
        """The (exchange, binding key) pairs of a queue, for tests and diagnostics."""
        return list(self._queues[queue].bindings) if queue in self._queues else []

    async def _consume(self, queue: _Queue, handler: Handler) -> None:
        limit = asyncio.Semaphore(queue.prefetch)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                message = await queue.items.get()
                queue.depth.dec()
                await limit.acquire()
                task = asyncio.create_task(self._deliver(queue, handler, message, limit))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()

    async def _deliver(
        self, queue: _Queue, handler: Handler, message: Message, limit: asyncio.Semaphore
    ) -> None:
        try:
            await handler(message)
            queue.acked.inc()
        except asyncio.CancelledError:
            queue.items.put_nowait(message)
            queue.depth.inc()
            raise
        except Exception:
            log.exception("bus handler failed", extra={"queue": queue.name})
            if message.delivery >= queue.max_deliveries:
                queue.dead_letters.append(message)
                queue.dead_lettered.inc()
            else:
                queue.requeued.inc()
                redelivered = Message(
                    message.exchange,
                    message.routing_key,
                    message.body,
                    message.headers,
                    message.delivery + 1,
                )
                queue.items.put_nowait(redelivered)
                queue.depth.inc()
        finally:
            limit.release()

    def dead_letters(self, queue: str) -> list[Message]:
        """Messages that failed every delivery on queue."""
        return list(self._queues[queue].dead_letters) if queue in self._queues else []

    async def _cancel(self, queue_name: str, consumer_id: int, anonymous: bool) -> None:
        queue = self._queues.get(queue_name)
        if queue is None:
            return
        task = queue.consumers.pop(consumer_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if anonymous:
            self._queues.pop(queue_name, None)
            queue.depth.dec(queue.items.qsize())

    async def close(self) -> None:
        for queue in list(self._queues.values()):
            for consumer_id in list(queue.consumers):
                await self._cancel(queue.name, consumer_id, anonymous=False)


@dataclass
class _InProcessSubscription:
    bus: InProcessBus
    queue: str
    consumer_id: int
    anonymous: bool

    async def cancel(self) -> None:
        await self.bus._cancel(self.queue, self.consumer_id, self.anonymous)


def create_bus(url: str, prefix: str = "") -> EventBus:
    """The bus for a broker URL: memory:// (in-process) or amqp:// (RabbitMQ), whose
    exchanges and queues carry the deployment prefix (HEDDLE_BROKER_PREFIX) if any."""
    if url.startswith("memory:"):
        return InProcessBus()
    if url.startswith(("amqp:", "amqps:")):
        from libs.common.rabbitmq import RabbitBus

        return RabbitBus(url, prefix=prefix)
    raise ValueError(f"HEDDLE_BROKER_URL: unsupported scheme in {url!r} (memory:// or amqp://)")
