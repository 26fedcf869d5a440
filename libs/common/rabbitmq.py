"""The RabbitMQ event bus (aio-pika): the production implementation of `EventBus`.

Topology, declared in `_declare_topology` and nowhere else:

- durable topic exchanges `heddle.events`, `heddle.triggers`, `heddle.logs` (and any other
  exchange a caller names, declared the same way on first use);
- a durable direct dead-letter exchange `heddle.dlx`;
- each named queue is a durable *quorum* queue (competing consumers) with
  `x-delivery-limit` and at-least-once dead-lettering to `heddle.dlx`, routing key = the
  queue's name, where the durable queue `<queue>.dlq` collects what failed every delivery;
- `queue=None` gives an exclusive, auto-delete classic queue (fan-out to each subscriber);
  what fails every delivery there is dropped (logged), as such queues carry notifications.

Every exchange and queue name on the broker carries the deployment's prefix
(`HEDDLE_BROKER_PREFIX`, e.g. `staging.heddle.events`, `staging.workflow.triggers`), so that
deployments sharing a vhost never see each other's messages; callers and handlers only ever
see the names without it. No prefix (the default) keeps the names above.

The number of messages waiting in each named queue this bus has consumed is exported as the
gauge `heddle_bus_queue_depth{queue}` (a passive declare every `depth_poll_interval_s`, on a
channel of its own), until the bus closes: a consumer that stopped still reports the backlog
it leaves. Exclusive queues are not polled (there may be one per open stream).

Messages are persistent and published on one long-lived channel with publisher confirms;
any number of publishes may await their confirms concurrently; a publish_many writes its
messages' frames at once, in order, and awaits their confirms together. Consumers ack after
the handler returns, the acks of one turn of the event loop coalesced into one write; a
handler that raises has its message requeued until `max_deliveries`, then dead-lettered.
The delivery number comes from the quorum queue's `x-delivery-count`
header (so a message that crashes its consumer process is counted too); exclusive queues
have a single consumer, which counts failures in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aio_pika
import aiormq
import aiormq.abc
import pamqp.frame
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from libs.common.errors import Unavailable
from libs.common.messages import (
    EVENTS_EXCHANGE,
    LOGS_EXCHANGE,
    TRIGGERS_EXCHANGE,
    Handler,
    Message,
    OutgoingMessage,
)
from libs.common.metrics import BUS_CONSUMED, BUS_QUEUE_DEPTH
from libs.common.periodic import periodic

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "heddle.dlx"
TOPIC_EXCHANGES = (EVENTS_EXCHANGE, TRIGGERS_EXCHANGE, LOGS_EXCHANGE)

# Messages of one publish_many written and awaited at a time (its later ones wait): bounds
# the frames and confirm futures one call holds, and aiormq's walk of its confirmations on
# each multiple ack.
_MAX_BATCH = 1000
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
_RETRYABLE = (*CONNECTION_EXCEPTIONS, DeliveryError, asyncio.TimeoutError)


def dead_letter_queue(queue: str) -> str:
    """The name of the queue collecting the messages `queue` dead-lettered."""
    return f"{queue}.dlq"


# The marshalled method frame of a publish, by (channel number, exchange, routing key): the
# same bytes for every message of one routing key, marshalled once by pamqp (an event type is
# a routing key: a few dozen keys per process).
_PUBLISH_FRAMES: dict[tuple[int, str, str], bytes] = {}


def _publish_frame(channel_number: int, exchange: str, routing_key: str) -> bytes:
    key = (channel_number, exchange, routing_key)
    frame = _PUBLISH_FRAMES.get(key)
    if frame is None:
        if len(_PUBLISH_FRAMES) >= 4096:
            _PUBLISH_FRAMES.clear()  # routing keys made of data: never an unbounded cache
        frame = _PUBLISH_FRAMES[key] = pamqp.frame.marshal(
            aiormq.spec.Basic.Publish(exchange=exchange, routing_key=routing_key), channel_number
        )
    return frame


async def _send_batch(
    channel: aiormq.Channel,
    exchange: str,
    items: Sequence[tuple[str, bytes, aiormq.spec.Basic.Properties]],
) -> list[asyncio.Future[Any]]:
    """Publish items on channel as one write of their frames; returns their confirms.

    What aiormq's basic_publish does for one message (delivery tag, confirm future, frames),
    done for all of them under one hold of its lock: one frame marshalling and one socket
    write per batch instead of a task, a marshalling and a write per message. Every frame is
    pamqp's; a routing key's method frame is marshalled once (`_publish_frame`). The
    broker's confirms resolve the futures through aiormq's confirmations table; closing the
    channel rejects them.
    """
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    parts: list[bytes] = []
    confirms: list[asyncio.Future[Any]] = []
    limit = channel.max_content_size
    number = channel.number
    marshal = pamqp.frame.marshal
    async with channel.lock:
        for routing_key, body, properties in items:
            channel.delivery_tag += 1
            confirm = channel.create_future()
            channel.confirmations[channel.delivery_tag] = confirm
            confirms.append(confirm)
            parts.append(_publish_frame(number, exchange, routing_key))
            parts.append(marshal(ContentHeader(properties=properties, body_size=len(body)), number))
            parts.extend(
                marshal(ContentBody(body[offset : offset + limit]), number)
                for offset in range(0, len(body), limit)
            )
        await channel.write_queue.put(ChannelFrame(payload=b"".join(parts), should_close=False))
    return confirms


def _acked(confirm: asyncio.Future[Any]) -> bool:
    return confirm.done() and not confirm.cancelled() and confirm.exception() is None


def _properties(headers: dict[str, str] | None, message_id: str) -> aiormq.spec.Basic.Properties:
    return aiormq.spec.Basic.Properties(
        delivery_mode=PERSISTENT,
        message_id=message_id,
        headers=dict(headers) if headers else None,
    )


def _message_ids(count: int) -> list[str]:
    """count random 128-bit message ids (32 hex digits, as uuid4().hex was) from one
    os.urandom call: uuid4 made a getrandom system call per message."""
    digits = os.urandom(16 * count).hex()
    return [digits[start : start + 32] for start in range(0, 32 * count, 32)]


def _headers_of(incoming: AbstractIncomingMessage) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in (incoming.headers or {}).items():
        if isinstance(value, str):
            headers[key] = value
        elif isinstance(value, bytes):
            headers[key] = value.decode("utf-8", "replace")
        elif isinstance(value, int | float | bool):
            headers[key] = str(value)
    return headers


class RabbitBus:
    """`EventBus` over RabbitMQ; see the module docstring for the topology and semantics."""

    def __init__(
        self,
        url: str,
        *,
        max_deliveries: int = 5,
        connect_timeout_s: float = 30.0,
        publish_timeout_s: float = 30.0,
        reconnect_interval_s: float = 1.0,
        connection_name: str = "heddle",
        prefix: str = "",
        depth_poll_interval_s: float = 5.0,
    ) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        if depth_poll_interval_s <= 0:
            raise ValueError("depth_poll_interval_s must be positive")
        self._prefix = f"{prefix}." if prefix else ""
        self._depth_poll_interval_s = depth_poll_interval_s
        self._watched: set[str] = set()
        self._depth_poller: asyncio.Task[None] | None = None
        self._depth_channel: AbstractChannel | None = None
        self.url = url
        self.max_deliveries = max_deliveries
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._reconnect_interval_s = reconnect_interval_s
        self._connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._connect_lock = asyncio.Lock()
        self._declare_lock = asyncio.Lock()
        self._subscriptions: set[RabbitSubscription] = set()

    def broker_name(self, name: str) -> str:
        """The name of an exchange or queue on the broker: name with the deployment prefix."""
        return self._prefix + name

    def _logical_name(self, broker_name: str) -> str:
        return broker_name.removeprefix(self._prefix) if self._prefix else broker_name

    # -- connection ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect (retrying with exponential backoff up to connect_timeout_s) and declare."""
        if self._channel is not None:
            return
        async with self._connect_lock:
            if self._channel is not None:
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._connect_timeout_s
            delay = 0.1
            while True:
                try:
                    connection = await aio_pika.connect_robust(
                        self.url,
                        reconnect_interval=self._reconnect_interval_s,
                        client_properties={"connection_name": self._connection_name},
                    )
                    break
                except CONNECTION_EXCEPTIONS as error:
                    if loop.time() + delay > deadline:
                        raise Unavailable(f"RabbitMQ unreachable: {error}") from error
                    log.warning("RabbitMQ connect failed, retrying in %.1fs: %s", delay, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            channel = await connection.channel(publisher_confirms=True)
            self._connection = connection
            await self._declare_topology(channel)
            self._channel = channel

    async def _declare_topology(self, channel: AbstractChannel) -> None:
        # Keyed by the names callers use; declared under the prefixed names.
        for name in TOPIC_EXCHANGES:
            self._exchanges[name] = await channel.declare_exchange(
                self.broker_name(name), aio_pika.ExchangeType.TOPIC, durable=True
            )
        self._exchanges[DEAD_LETTER_EXCHANGE] = await channel.declare_exchange(
            self.broker_name(DEAD_LETTER_EXCHANGE), aio_pika.ExchangeType.DIRECT, durable=True
        )

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is not None:
            return exchange
        await self.connect()
        async with self._declare_lock:
            if name not in self._exchanges:
                assert self._channel is not None
                self._exchanges[name] = await self._channel.declare_exchange(
                    self.broker_name(name), aio_pika.ExchangeType.TOPIC, durable=True
                )
        return self._exchanges[name]

    async def close(self) -> None:
        if self._depth_poller is not None:
            self._depth_poller.cancel()
            await asyncio.gather(self._depth_poller, return_exceptions=True)
            self._depth_poller = None
            await self._close_depth_channel()
        for subscription in list(self._subscriptions):
            await subscription.cancel()
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._channel = None
        self._exchanges.clear()

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self, exchange: str, routing_key: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Publish a persistent message; returns once the broker confirmed it.

        While the connection is down the publish is retried (the robust connection restores
        the channel in the background) until publish_timeout_s; a retry after a lost confirm
        may duplicate the message (with its message id), which consumers tolerate.
        """
        await self.publish_many(exchange, [(routing_key, body, headers or {})])

    async def publish_many(self, exchange: str, messages: Sequence[OutgoingMessage]) -> None:
        """Publish every message in order on the confirming channel, the confirms awaited
        together; what is not confirmed (a lost connection, a nack, no confirm within
        publish_timeout_s) is published again, in order, until publish_timeout_s after the
        first failure. Returns once every message is confirmed, or raises Unavailable.
        """
        for start in range(0, len(messages), _MAX_BATCH):
            await self._publish_batch(exchange, messages[start : start + _MAX_BATCH])

    async def _publish_batch(self, exchange: str, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        target = await self._exchange(exchange)
        pending = [
            (key, body, _properties(headers, message_id))
            for (key, body, headers), message_id in zip(
                messages, _message_ids(len(messages)), strict=True
            )
        ]
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        delay = 0.05
        while True:
            confirms: list[asyncio.Future[Any]] = []
            timeout = self._publish_timeout_s if deadline is None else deadline - loop.time()
            error: BaseException | None = None
            try:
                # Bounded: a confirm that never comes must not hold the caller (a scheduler
                # tick, the relay) for good.
                async with asyncio.timeout(max(timeout, 0.01)):
                    channel = await self._underlay()
                    confirms = await _send_batch(channel, target.name, pending)
                    await asyncio.wait(confirms)
            except _RETRYABLE as failure:
                error = failure
            unconfirmed = [
                item
                for item, confirm in zip(pending, confirms, strict=False)
                if not _acked(confirm)
            ]
            # Those the batch never reached (the channel failed before its frames were queued).
            unconfirmed += pending[len(confirms) :]
            if not unconfirmed:
                return
            for confirm in confirms:
                # A confirm arriving late for a message published again is ignored (aiormq).
                confirm.cancel()
            if error is None:
                # Nacked (DeliveryError), or rejected with the channel's close.
                error = next(
                    (c.exception() for c in confirms if c.done() and not c.cancelled()), None
                ) or Unavailable("not confirmed")
            if deadline is None:
                deadline = loop.time() + self._publish_timeout_s
            if loop.time() + delay >= deadline:
                raise Unavailable(
                    f"RabbitMQ publish to {target.name!r} failed: {error!r}"
                ) from error
            # Published again with the same properties, so the same message ids: a duplicate
            # a lost confirm causes is recognisable as such.
            log.warning(
                "publish of %d message(s) failed, retrying in %.2fs: %r",
                len(unconfirmed),
                delay,
                error,
            )
            pending = unconfirmed
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _underlay(self) -> aiormq.Channel:
        # The robust channel's current aiormq channel: waits for a reconnect in progress;
        # the next reconnect replaces it.
        assert self._channel is not None
        return cast(aiormq.Channel, await self._channel.get_underlay_channel())

    # -- consuming -------------------------------------------------------------------------

    async def subscribe(
        self,
        exchange: str,
        binding_keys: list[str],
        handler: Handler,
        *,
        queue: str | None = None,
        prefetch: int = 64,
    ) -> RabbitSubscription:
        """Consume on a channel of its own with basic_qos(prefetch); see the module docs."""
        target = await self._exchange(exchange)
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        declared: AbstractQueue
        if queue is None:
            declared = await channel.declare_queue(
                f"{target.name}.anon.{uuid.uuid4().hex}",
                durable=False,
                exclusive=True,
                auto_delete=True,
            )
        else:
            declared = await self._declare_named_queue(channel, queue)
        for key in binding_keys:
            await declared.bind(target, key)
        subscription = RabbitSubscription(
            bus=self,
            channel=channel,
            queue=declared,
            handler=handler,
            exchange=exchange,
            anonymous=queue is None,
            label=queue or "anonymous",
        )
        subscription.consumer_tag = await declared.consume(subscription.on_message, no_ack=False)
        self._subscriptions.add(subscription)
        if queue is not None:
            self._watch_depth(queue)
        return subscription

    async def bind(self, exchange: str, queue: str, binding_key: str) -> None:
        """Bind on a channel of its own (an error closes it, not the publishing one)."""
        target = await self._exchange(exchange)
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            declared = await self._declare_named_queue(channel, queue)
            await declared.bind(target, binding_key)
        finally:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await channel.close()

    async def unbind(self, exchange: str, queue: str, binding_key: str) -> None:
        target = await self._exchange(exchange)
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            declared = await self._declare_named_queue(channel, queue)
            await declared.unbind(target, binding_key)
        finally:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await channel.close()

    async def _declare_named_queue(self, channel: AbstractChannel, name: str) -> AbstractQueue:
        queue_name = self.broker_name(name)
        dead_letters = await channel.declare_queue(dead_letter_queue(queue_name), durable=True)
        await dead_letters.bind(self._exchanges[DEAD_LETTER_EXCHANGE], queue_name)
        return await channel.declare_queue(
            queue_name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                # The broker's own limit also catches messages whose consumer crashed.
                "x-delivery-limit": self.max_deliveries - 1,
                "x-dead-letter-exchange": self.broker_name(DEAD_LETTER_EXCHANGE),
                "x-dead-letter-routing-key": queue_name,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )

    # -- queue depth -----------------------------------------------------------------------

    def _watch_depth(self, queue: str) -> None:
        self._watched.add(queue)
        if self._depth_poller is None or self._depth_poller.done():
            self._depth_poller = periodic(
                "rabbitmq-queue-depth",
                self._depth_poll_interval_s,
                self._poll_depths,
                immediately=True,
            )

    async def _poll_depths(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                channel = self._depth_channel
                if channel is None or channel.is_closed:
                    assert self._connection is not None
                    channel = await self._connection.channel(publisher_confirms=False)
                    self._depth_channel = channel
                # The raw channel: a passive declare through aio-pika's robust channel
                # answers from its cache of declared queues, not from the broker.
                raw = await channel.get_underlay_channel()
                for queue in sorted(self._watched):
                    declared = await raw.queue_declare(self.broker_name(queue), passive=True)
                    BUS_QUEUE_DEPTH.labels(queue).set(declared.message_count or 0)
        except Exception as error:
            # Broker away (the robust connection reconnects) or a queue deleted under us (the
            # broker closes the channel): try again next round (a debug line, not an error).
            log.debug("queue depth poll failed: %r", error)
            await self._close_depth_channel()

    async def _close_depth_channel(self) -> None:
        channel, self._depth_channel = self._depth_channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()


@dataclass
class _Acks:
    """The deliveries of one consumer channel whose handlers finished, not yet acked."""

    through: int = 0  # every delivery tag up to this one is acked or settled
    handled: set[int] = field(default_factory=set)  # finished, to ack
    settled: set[int] = field(default_factory=set)  # nacked, rejected or acked alone

    def frames(self) -> list[aiormq.spec.Basic.Ack]:
        """The ack frames of what is handled; afterwards it is acked."""
        frames = []
        tag, last_handled = self.through, 0
        while True:
            if tag + 1 in self.handled:
                self.handled.discard(tag + 1)
                last_handled = tag + 1
            elif tag + 1 in self.settled:
                self.settled.discard(tag + 1)
            else:
                break
            tag += 1
        if last_handled:
            # The broker refuses a tag it no longer holds, even with multiple: the highest
            # handled one, not a settled one past it.
            frames.append(aiormq.spec.Basic.Ack(delivery_tag=last_handled, multiple=True))
        self.through = tag
        # Behind a delivery still in its handler: acked one by one.
        for later in sorted(self.handled):
            frames.append(aiormq.spec.Basic.Ack(delivery_tag=later, multiple=False))
        self.settled |= self.handled
        self.handled.clear()
        return frames


@dataclass(eq=False)
class RabbitSubscription:
    """One consumer; `cancel()` stops it and requeues what it had not acknowledged."""

    bus: RabbitBus
    channel: AbstractChannel
    queue: AbstractQueue
    handler: Handler
    exchange: str
    anonymous: bool
    label: str  # the queue's name without the deployment prefix, or "anonymous"
    consumer_tag: str | None = None
    _failures: dict[str, int] = field(default_factory=dict)
    _running: set[asyncio.Task[Any]] = field(default_factory=set)
    _cancelled: bool = False
    _acks: dict[aiormq.abc.AbstractChannel, _Acks] = field(default_factory=dict)
    _ack_scheduled: bool = False

    def __post_init__(self) -> None:
        # The counter's child looked up once, not per message (~2 us a lookup).
        self._acked_total = BUS_CONSUMED.labels(self.label, "ack")

    def _delivery_number(self, incoming: AbstractIncomingMessage) -> int:
        count = (incoming.headers or {}).get("x-delivery-count")
        if isinstance(count, int) and not self.anonymous:
            return count + 1
        key = incoming.message_id or ""
        if key:
            return self._failures.get(key, 0) + 1
        return 2 if incoming.redelivered else 1

    async def on_message(self, incoming: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await self._handle(incoming)
        finally:
            if task is not None:
                self._running.discard(task)

    async def _handle(self, incoming: AbstractIncomingMessage) -> None:
        delivery = self._delivery_number(incoming)
        message = Message(
            exchange=self.bus._logical_name(incoming.exchange)
            if incoming.exchange
            else self.exchange,
            routing_key=incoming.routing_key or "",
            body=incoming.body,
            headers=_headers_of(incoming),
            delivery=delivery,
        )
        key = incoming.message_id or ""
        label = self.label
        try:
            await self.handler(message)
        except asyncio.CancelledError:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await incoming.nack(requeue=True)
                self._settled(incoming)
            raise
        except Exception:
            log.exception(
                "bus handler failed",
                extra={"queue": self.queue.name, "delivery": delivery},
            )
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                if delivery >= self.bus.max_deliveries:
                    self._failures.pop(key, None)
                    log.warning(
                        "dead-lettering message after %d deliveries",
                        delivery,
                        extra={"queue": self.queue.name},
                    )
                    BUS_CONSUMED.labels(label, "dead_letter").inc()
                    await incoming.reject(requeue=False)
                    self._settled(incoming)
                else:
                    BUS_CONSUMED.labels(label, "requeue").inc()
                    if self.anonymous and key:
                        self._failures[key] = delivery
                    await incoming.nack(requeue=True)
                    self._settled(incoming)
            return
        self._failures.pop(key, None)
        self._acked_total.inc()
        self._ack_later(incoming)

    def _acks_of(self, incoming: AbstractIncomingMessage) -> _Acks | None:
        try:
            channel = incoming.channel
        except CONNECTION_EXCEPTIONS:
            # The channel dropped: the broker redelivers, handlers are idempotent.
            log.warning("ack lost with the channel", extra={"queue": self.queue.name})
            return None
        acks = self._acks.get(channel)
        if acks is None:
            acks = self._acks[channel] = _Acks()
        return acks

    def _ack_later(self, incoming: AbstractIncomingMessage) -> None:
        # Acks are coalesced: the handlers that finish in one turn of the loop are acked
        # together, one Basic.Ack(multiple) up to the highest tag below which every delivery
        # is settled, one each for those above a delivery still in its handler.
        acks = self._acks_of(incoming)
        if acks is None or incoming.delivery_tag is None:
            return
        acks.handled.add(incoming.delivery_tag)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_acks)

    def _settled(self, incoming: AbstractIncomingMessage) -> None:
        # Nacked or rejected (after its frame was queued): an ack(multiple) may pass it.
        acks = self._acks_of(incoming)
        if acks is not None and incoming.delivery_tag is not None:
            acks.settled.add(incoming.delivery_tag)

    def _send_acks(self) -> None:
        self._ack_scheduled = False
        for channel, acks in list(self._acks.items()):
            if channel.is_closed:
                # Unacked deliveries of a closed channel go back to the queue.
                del self._acks[channel]
                continue
            frames = acks.frames()
            if not frames:
                continue
            try:
                cast(aiormq.Channel, channel).write_queue.put_nowait(
                    ChannelFrame.marshall(channel_number=channel.number, frames=frames)
                )
            except CONNECTION_EXCEPTIONS:
                log.warning("ack lost with the channel", extra={"queue": self.queue.name})

    async def cancel(self) -> None:
        if self._cancelled:
            return
        self._cancelled = True
        self.bus._subscriptions.discard(self)
        try:
            if self.consumer_tag is not None and not self.channel.is_closed:
                await self.queue.cancel(self.consumer_tag)
            for task in list(self._running):
                task.cancel()
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
            # What the handlers finished is acked before the channel closes.
            self._send_acks()
            if self.anonymous and not self.channel.is_closed:
                await self.queue.delete(if_unused=False, if_empty=False)
        except CONNECTION_EXCEPTIONS as error:
            log.warning("cancelling a subscription: %r", error)
        finally:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await self.channel.close()
