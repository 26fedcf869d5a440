"""One contract for every EventBus: the in-process bus and RabbitMQ behave the same."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from libs.common.bus import EVENTS_EXCHANGE, EventBus, InProcessBus, Message
from libs.common.rabbitmq import RabbitBus, dead_letter_queue
from tests.helpers import assert_eventually
from tests.infra_fixtures import RABBIT_URL, delete_rabbit_queues

MAX_DELIVERIES = 3

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "rabbitmq"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    instance: EventBus
    if request.param == "memory":
        instance = InProcessBus(max_deliveries=MAX_DELIVERIES)
    else:
        instance = RabbitBus(RABBIT_URL, max_deliveries=MAX_DELIVERIES)
    await instance.connect()
    yield instance
    await instance.close()


@pytest.fixture
def prefix() -> str:
    """A routing-key prefix of this test alone."""
    return f"test{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def queue_name(bus: EventBus) -> AsyncIterator[str]:
    name = f"test.q.{uuid.uuid4().hex[:10]}"
    yield name
    if isinstance(bus, RabbitBus):
        await delete_rabbit_queues(name)


async def dead_letters(bus: EventBus, queue: str) -> list[bytes]:
    if isinstance(bus, InProcessBus):
        return [message.body for message in bus.dead_letters(queue)]
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(dead_letter_queue(queue), passive=True)
        bodies = []
        # Unacknowledged gets: closing the connection puts them back.
        while (message := await dlq.get(fail=False, no_ack=False)) is not None:
            bodies.append(message.body)
        return bodies


async def test_publish_subscribe_delivers_body_headers_and_key(bus: EventBus, prefix: str) -> None:
    received: list[Message] = []

    async def handler(message: Message) -> None:
        received.append(message)

    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.created"], handler)
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.created", b"hello", {"traceparent": "00-abc"})

    await assert_eventually(lambda: len(received) == 1)
    message = received[0]
    assert message.body == b"hello"
    assert message.routing_key == f"{prefix}.created"
    assert message.exchange == EVENTS_EXCHANGE
    assert message.headers["traceparent"] == "00-abc"
    assert message.delivery == 1


async def test_publish_many_delivers_each_in_order(bus: EventBus, prefix: str) -> None:
    received: list[Message] = []

    async def handler(message: Message) -> None:
        received.append(message)

    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.#"], handler, prefetch=1)
    await bus.publish_many(
        EVENTS_EXCHANGE,
        [(f"{prefix}.n{i}", f"body-{i}".encode(), {"seq": str(i)}) for i in range(5)]
        + [(f"other-{prefix}.x", b"not for us", {})],
    )
    await assert_eventually(lambda: len(received) == 5)
    assert [m.body for m in received] == [f"body-{i}".encode() for i in range(5)]
    assert [m.headers["seq"] for m in received] == [str(i) for i in range(5)]
    assert [m.routing_key for m in received] == [f"{prefix}.n{i}" for i in range(5)]


async def test_topic_matching_star_is_one_word_hash_any(bus: EventBus, prefix: str) -> None:
    star: list[str] = []
    hash_: list[str] = []

    async def on_star(message: Message) -> None:
        star.append(message.routing_key)

    async def on_hash(message: Message) -> None:
        hash_.append(message.routing_key)

    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.*.done", f"{prefix}.end"], on_star)
    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.#"], on_hash)
    keys = [f"{prefix}.a.done", f"{prefix}.a.b.done", f"{prefix}.done", f"{prefix}.x", "other.a"]
    for key in [*keys, f"{prefix}.end"]:
        await bus.publish(EVENTS_EXCHANGE, key, b"")

    await assert_eventually(lambda: f"{prefix}.end" in star and f"{prefix}.end" in hash_)
    assert sorted(star) == sorted([f"{prefix}.a.done", f"{prefix}.end"])
    assert sorted(hash_) == sorted(
        [f"{prefix}.a.done", f"{prefix}.a.b.done", f"{prefix}.done", f"{prefix}.x", f"{prefix}.end"]
    )


async def test_competing_consumers_each_message_to_exactly_one(
    bus: EventBus, prefix: str, queue_name: str
) -> None:
    got: dict[str, list[bytes]] = {"a": [], "b": []}

    def handler_for(name: str):
        async def handler(message: Message) -> None:
            got[name].append(message.body)
            await asyncio.sleep(0.002)  # simulated work, so both consumers get a share

        return handler

    await bus.subscribe(
        EVENTS_EXCHANGE, [f"{prefix}.job"], handler_for("a"), queue=queue_name, prefetch=2
    )
    await bus.subscribe(
        EVENTS_EXCHANGE, [f"{prefix}.job"], handler_for("b"), queue=queue_name, prefetch=2
    )
    bodies = [str(i).encode() for i in range(40)]
    await asyncio.gather(*(bus.publish(EVENTS_EXCHANGE, f"{prefix}.job", body) for body in bodies))

    await assert_eventually(lambda: len(got["a"]) + len(got["b"]) >= len(bodies))
    assert sorted(got["a"] + got["b"]) == sorted(bodies)
    assert got["a"] and got["b"]


async def test_anonymous_subscribers_each_get_every_message(bus: EventBus, prefix: str) -> None:
    first: list[bytes] = []
    second: list[bytes] = []

    async def on_first(message: Message) -> None:
        first.append(message.body)

    async def on_second(message: Message) -> None:
        second.append(message.body)

    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.#"], on_first)
    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.#"], on_second)
    for i in range(5):
        await bus.publish(EVENTS_EXCHANGE, f"{prefix}.e", bytes([i]))

    await assert_eventually(lambda: len(first) == 5 and len(second) == 5)
    assert sorted(first) == sorted(second) == [bytes([i]) for i in range(5)]


@pytest.mark.parametrize("named", [True, False])
async def test_handler_exception_redelivers(
    bus: EventBus, prefix: str, queue_name: str, named: bool
) -> None:
    deliveries: list[int] = []

    async def flaky(message: Message) -> None:
        deliveries.append(message.delivery)
        if message.delivery == 1:
            raise RuntimeError("transient")

    await bus.subscribe(
        EVENTS_EXCHANGE, [f"{prefix}.x"], flaky, queue=queue_name if named else None
    )
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.x", b"m")

    await assert_eventually(lambda: deliveries == [1, 2])


async def test_dead_lettered_after_max_deliveries(
    bus: EventBus, prefix: str, queue_name: str
) -> None:
    deliveries: list[int] = []

    async def poison(message: Message) -> None:
        deliveries.append(message.delivery)
        raise ValueError("never works")

    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.x"], poison, queue=queue_name)
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.x", b"poison")

    async def dead_lettered() -> bool:
        return await dead_letters(bus, queue_name) == [b"poison"]

    await assert_eventually(dead_lettered)
    assert deliveries == list(range(1, MAX_DELIVERIES + 1))


async def test_durable_queue_keeps_messages_while_no_consumer(prefix: str) -> None:
    queue = f"test.q.{uuid.uuid4().hex[:10]}"
    received: list[bytes] = []

    async def handler(message: Message) -> None:
        received.append(message.body)

    first = RabbitBus(RABBIT_URL)
    second = RabbitBus(RABBIT_URL)
    try:
        subscription = await first.subscribe(EVENTS_EXCHANGE, [f"{prefix}.p"], handler, queue=queue)
        await subscription.cancel()
        await first.publish(EVENTS_EXCHANGE, f"{prefix}.p", b"kept")
        await first.close()
        assert received == []

        await second.subscribe(EVENTS_EXCHANGE, [f"{prefix}.p"], handler, queue=queue)
        await assert_eventually(lambda: received == [b"kept"])
    finally:
        await first.close()
        await second.close()
        await delete_rabbit_queues(queue)


@pytest.mark.parametrize("named", [True, False])
async def test_unsubscribed_handler_gets_nothing_more(
    bus: EventBus, prefix: str, queue_name: str, named: bool
) -> None:
    cancelled: list[bytes] = []
    still: list[bytes] = []

    async def on_cancelled(message: Message) -> None:
        cancelled.append(message.body)

    async def on_still(message: Message) -> None:
        still.append(message.body)

    subscription = await bus.subscribe(
        EVENTS_EXCHANGE, [f"{prefix}.u"], on_cancelled, queue=queue_name if named else None
    )
    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.u"], on_still)
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.u", b"1")
    await assert_eventually(lambda: cancelled == [b"1"] and still == [b"1"])

    await subscription.cancel()
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.u", b"2")
    await assert_eventually(lambda: still == [b"1", b"2"])
    assert cancelled == [b"1"]


async def _close_broker_side(connection_name: str) -> None:
    """Have RabbitMQ drop the connection whose client named itself connection_name."""

    async def rabbitmqctl(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        return out.decode()

    listing = await rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    pids = [line.split("\t")[0] for line in listing.splitlines() if connection_name in line]
    assert pids, "connection not found"
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "test: simulated broker failure")


async def test_reconnects_and_restores_consumers_after_a_connection_loss(prefix: str) -> None:
    name = f"heddle-test-{uuid.uuid4().hex[:8]}"
    queue = f"test.q.{uuid.uuid4().hex[:10]}"
    bus = RabbitBus(RABBIT_URL, connection_name=name, reconnect_interval_s=0.2)
    received: list[bytes] = []

    async def handler(message: Message) -> None:
        received.append(message.body)

    try:
        await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.r"], handler, queue=queue)
        await bus.publish(EVENTS_EXCHANGE, f"{prefix}.r", b"before")
        await assert_eventually(lambda: received == [b"before"])

        await _close_broker_side(name)
        # Publishing retries until the robust connection has restored the channel.
        await bus.publish(EVENTS_EXCHANGE, f"{prefix}.r", b"after")
        await assert_eventually(lambda: received == [b"before", b"after"], timeout=10)
    finally:
        await bus.close()
        await delete_rabbit_queues(queue)


async def test_a_batch_published_after_a_connection_loss_arrives_whole_and_in_order(
    prefix: str,
) -> None:
    # publish_many writes the batch as one write on the channel the loss killed: every
    # message is published again, in order, once the channel is restored.
    name = f"heddle-test-{uuid.uuid4().hex[:8]}"
    queue = f"test.q.{uuid.uuid4().hex[:10]}"
    bus = RabbitBus(RABBIT_URL, connection_name=name, reconnect_interval_s=0.2)
    received: list[tuple[bytes, str]] = []

    async def handler(message: Message) -> None:
        received.append((message.body, message.headers["seq"]))

    try:
        await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.r"], handler, queue=queue)
        await _close_broker_side(name)
        batch = [(f"{prefix}.r", b"m%d" % i, {"seq": str(i)}) for i in range(200)]
        await bus.publish_many(EVENTS_EXCHANGE, batch)
        expected = [(b"m%d" % i, str(i)) for i in range(200)]
        await assert_eventually(lambda: received == expected, timeout=10)
    finally:
        await bus.close()
        await delete_rabbit_queues(queue)


async def test_bind_and_unbind_a_pattern_on_a_named_queue(
    bus: EventBus, prefix: str, queue_name: str
) -> None:
    on_queue: list[bytes] = []
    witness: list[bytes] = []

    async def on_named(message: Message) -> None:
        on_queue.append(message.body)

    async def on_witness(message: Message) -> None:
        witness.append(message.body)

    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.marker"], on_named, queue=queue_name)
    await bus.subscribe(EVENTS_EXCHANGE, [f"{prefix}.#"], on_witness)
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.node.done", b"unbound")
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.marker", b"m1")
    # The queue is FIFO: had "unbound" been routed to it, it would come before the marker.
    await assert_eventually(lambda: on_queue == [b"m1"] and len(witness) == 2)

    await bus.bind(EVENTS_EXCHANGE, queue_name, f"{prefix}.node.*")
    await bus.bind(EVENTS_EXCHANGE, queue_name, f"{prefix}.node.*")  # idempotent
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.node.done", b"bound")
    await assert_eventually(lambda: on_queue == [b"m1", b"bound"])

    await bus.unbind(EVENTS_EXCHANGE, queue_name, f"{prefix}.node.*")
    await bus.unbind(EVENTS_EXCHANGE, queue_name, f"{prefix}.never.bound")  # a no-op
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.node.done", b"unbound again")
    await bus.publish(EVENTS_EXCHANGE, f"{prefix}.marker", b"m2")
    await assert_eventually(lambda: on_queue == [b"m1", b"bound", b"m2"] and len(witness) == 5)
    if isinstance(bus, InProcessBus):
        assert bus.bindings(queue_name) == [(EVENTS_EXCHANGE, f"{prefix}.marker")]


async def test_rabbitmq_repeated_routing_keys_and_distinct_message_ids(prefix: str) -> None:
    """A batch repeating routing keys (a round of events: a few types, many messages) is
    routed per message, in order, across two batches; every message carries its own
    32-hex-digit message id (a retry's duplicate is recognised by it)."""
    bus = RabbitBus(RABBIT_URL)
    await bus.connect()
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(bus.broker_name(EVENTS_EXCHANGE), f"{prefix}.#")
        keys = [f"{prefix}.{name}" for name in ("started", "succeeded") * 3]
        for batch in range(2):
            await bus.publish_many(
                EVENTS_EXCHANGE, [(key, f"{batch}-{i}".encode(), {}) for i, key in enumerate(keys)]
            )
        received = []
        while (message := await queue.get(fail=False, no_ack=True, timeout=5)) is not None:
            received.append(message)
        assert [(m.routing_key, m.body) for m in received] == [
            (key, f"{batch}-{i}".encode()) for batch in range(2) for i, key in enumerate(keys)
        ]
        ids = [m.message_id or "" for m in received]
        assert len(set(ids)) == len(ids)
        assert all(len(id_) == 32 and int(id_, 16) >= 0 for id_ in ids)
    finally:
        await connection.close()
        await bus.close()
