"""RabbitMQ specifics beyond the bus contract: the deployment prefix on every broker name
(deployments sharing a vhost stay apart) and the queue-depth gauge from a real backlog."""

from __future__ import annotations

import uuid

import aio_pika
import aiormq
import pytest
from prometheus_client import REGISTRY

from libs.common.bus import EVENTS_EXCHANGE, TRIGGERS_EXCHANGE, Message, create_bus
from libs.common.rabbitmq import DEAD_LETTER_EXCHANGE, RabbitBus, _Acks, dead_letter_queue
from libs.common.settings import CommonSettings
from tests.helpers import assert_eventually
from tests.infra_fixtures import RABBIT_URL, delete_rabbit_exchanges, delete_rabbit_queues

pytestmark = pytest.mark.integration


def depth(queue: str) -> float | None:
    return REGISTRY.get_sample_value("heddle_bus_queue_depth", {"queue": queue})


async def broker_has_queue(name: str) -> bool:
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True


async def broker_has_exchange(name: str) -> bool:
    connection = await aio_pika.connect(RABBIT_URL)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_exchange(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True


def test_the_prefix_setting_defaults_to_none_and_refuses_odd_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HEDDLE_BROKER_PREFIX", raising=False)
    assert CommonSettings().broker_prefix == ""
    monkeypatch.setenv("HEDDLE_BROKER_PREFIX", "staging")
    assert CommonSettings().broker_prefix == "staging"
    monkeypatch.setenv("HEDDLE_BROKER_PREFIX", "a.b#")
    with pytest.raises(ValueError, match="broker_prefix"):
        CommonSettings()


async def test_deployments_with_different_prefixes_do_not_see_each_others_messages() -> None:
    tag = uuid.uuid4().hex[:8]
    queue = f"test.triggers.{tag}"  # the same logical queue in both deployments
    key = f"test{tag}.fire"
    blue = create_bus(RABBIT_URL, f"blue{tag}")
    green = create_bus(RABBIT_URL, f"green{tag}")
    assert isinstance(blue, RabbitBus)
    got: dict[str, list[Message]] = {"blue": [], "blue_events": [], "green": [], "green_events": []}

    def collect(name: str):
        async def handler(message: Message) -> None:
            got[name].append(message)

        return handler

    try:
        await blue.subscribe(TRIGGERS_EXCHANGE, [key], collect("blue"), queue=queue)
        await green.subscribe(TRIGGERS_EXCHANGE, [key], collect("green"), queue=queue)
        await blue.subscribe(EVENTS_EXCHANGE, [f"{key}.#"], collect("blue_events"))
        await green.subscribe(EVENTS_EXCHANGE, [f"{key}.#"], collect("green_events"))

        await blue.publish(TRIGGERS_EXCHANGE, key, b"blue fire")
        await green.publish(TRIGGERS_EXCHANGE, key, b"green fire")
        await blue.publish(EVENTS_EXCHANGE, f"{key}.e", b"blue event")
        await green.publish(EVENTS_EXCHANGE, f"{key}.e", b"green event")

        await assert_eventually(lambda: all(len(messages) >= 1 for messages in got.values()))
        # Published after the others, on the same channels: had anything crossed, it would
        # have arrived by the time these have.
        await blue.publish(TRIGGERS_EXCHANGE, key, b"blue last")
        await green.publish(TRIGGERS_EXCHANGE, key, b"green last")
        await assert_eventually(lambda: len(got["blue"]) == 2 and len(got["green"]) == 2)

        assert [m.body for m in got["blue"]] == [b"blue fire", b"blue last"]
        assert [m.body for m in got["green"]] == [b"green fire", b"green last"]
        assert [m.body for m in got["blue_events"]] == [b"blue event"]
        assert [m.body for m in got["green_events"]] == [b"green event"]
        # Handlers see the names without the prefix.
        assert got["blue"][0].exchange == TRIGGERS_EXCHANGE
        assert got["green_events"][0].exchange == EVENTS_EXCHANGE

        for name in ("blue", "green"):
            assert await broker_has_queue(f"{name}{tag}.{queue}")
            assert await broker_has_queue(dead_letter_queue(f"{name}{tag}.{queue}"))
            assert await broker_has_exchange(f"{name}{tag}.{TRIGGERS_EXCHANGE}")
            assert await broker_has_exchange(f"{name}{tag}.{DEAD_LETTER_EXCHANGE}")
        assert not await broker_has_queue(queue)
    finally:
        await blue.close()
        await green.close()
        await delete_rabbit_queues(f"blue{tag}.{queue}", f"green{tag}.{queue}")
        await delete_rabbit_exchanges(
            *(
                f"{name}{tag}.{exchange}"
                for name in ("blue", "green")
                for exchange in ("heddle.events", "heddle.triggers", "heddle.logs", "heddle.dlx")
            )
        )


async def test_without_a_prefix_the_names_are_unchanged() -> None:
    queue = f"test.q.{uuid.uuid4().hex[:10]}"
    bus = create_bus(RABBIT_URL)

    async def ignore(message: Message) -> None:
        return None

    try:
        await bus.subscribe(TRIGGERS_EXCHANGE, ["test.nothing"], ignore, queue=queue)
        assert await broker_has_queue(queue)
        assert await broker_has_queue(f"{queue}.dlq")
        for exchange in ("heddle.events", "heddle.triggers", "heddle.logs", "heddle.dlx"):
            assert await broker_has_exchange(exchange)
    finally:
        await bus.close()
        await delete_rabbit_queues(queue)


async def test_queue_depth_gauge_shows_the_real_backlog() -> None:
    tag = uuid.uuid4().hex[:8]
    queue = f"test.depth.{tag}"
    key = f"test{tag}.job"
    bus = RabbitBus(RABBIT_URL, prefix=f"d{tag}", depth_poll_interval_s=0.1)
    received: list[bytes] = []

    async def handler(message: Message) -> None:
        received.append(message.body)

    try:
        subscription = await bus.subscribe(TRIGGERS_EXCHANGE, [key], handler, queue=queue)
        await assert_eventually(lambda: depth(queue) == 0, message=f"depth {depth(queue)}")
        # The consumer stops: what is published next waits in the queue.
        await subscription.cancel()
        await bus.publish_many(TRIGGERS_EXCHANGE, [(key, b"%d" % i, {}) for i in range(25)])
        await assert_eventually(lambda: depth(queue) == 25, message=f"depth {depth(queue)}")
        assert received == []

        # A consumer drains it, and the gauge follows.
        await bus.subscribe(TRIGGERS_EXCHANGE, [key], handler, queue=queue)
        await assert_eventually(lambda: len(received) == 25)
        await assert_eventually(lambda: depth(queue) == 0, message=f"depth {depth(queue)}")
    finally:
        await bus.close()
        await delete_rabbit_queues(f"d{tag}.{queue}")
        await delete_rabbit_exchanges(
            *(
                f"d{tag}.{e}"
                for e in ("heddle.events", "heddle.triggers", "heddle.logs", "heddle.dlx")
            )
        )


def test_acks_are_coalesced_without_passing_a_delivery_in_its_handler() -> None:
    acks = _Acks()
    # 1-3 finished, 4 still in its handler, 5 and 6 finished: one ack up to 3, 5 and 6 alone.
    acks.handled |= {1, 2, 3, 5, 6}
    assert [(f.delivery_tag, f.multiple) for f in acks.frames()] == [
        (3, True),
        (5, False),
        (6, False),
    ]
    # 4 nacked, 7 and 8 finished: the broker holds neither 4 nor 5-6 any more, so the ack
    # names 8 and passes them.
    acks.settled.add(4)
    acks.handled |= {7, 8}
    assert [(f.delivery_tag, f.multiple) for f in acks.frames()] == [(8, True)]
    # 9 nacked alone: nothing to ack (a multiple ack naming 9 would close the channel).
    acks.settled.add(9)
    assert acks.frames() == []
    acks.handled.add(10)
    assert [(f.delivery_tag, f.multiple) for f in acks.frames()] == [(10, True)]
    assert (acks.through, acks.handled, acks.settled) == (10, set(), set())
