"""The webhook queue is bound only to what active subscriptions need (issue #17): no node
binding without a subscription to node events; a subscription created answers once bound (its
next event is delivered); deleted, its pattern is unbound by the reconcile after the grace."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from heddle.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.bus import EVENTS_EXCHANGE, EventBus, InProcessBus
from libs.common.rabbitmq import RabbitBus
from libs.common.secrets import generate_key
from services.log.subscriptions import WebhookSpec, WebhookSubscriptions, binding_keys
from services.log.webhooks import DeliveryPolicy, WebhookDeliverer
from tests.helpers import assert_eventually
from tests.infra_fixtures import delete_rabbit_queues
from tests.integration.test_webhooks import Receiver

pytestmark = pytest.mark.integration

TENANT = "t-bindings"


def test_binding_keys_stay_in_the_event_families() -> None:
    assert binding_keys("execution.failed") == ["execution.failed"]
    assert binding_keys("node.*") == ["node.*"]
    assert binding_keys("*.failed") == ["execution.failed", "node.failed"]
    assert binding_keys("#") == ["execution.#", "node.#"]
    assert binding_keys("#.waiting") == ["execution.#.waiting", "node.#.waiting"]
    assert binding_keys("knowledge.document.queued") == []


async def bound_keys(bus: EventBus, queue: str) -> set[str]:
    """The routing keys `queue` is bound to on heddle.events, as the broker has them."""
    if isinstance(bus, InProcessBus):
        return {key for exchange, key in bus.bindings(queue) if exchange == EVENTS_EXCHANGE}
    assert isinstance(bus, RabbitBus)
    listing = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        "list_bindings",
        "source_name",
        "destination_name",
        "routing_key",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await listing.communicate()
    source, destination = bus.broker_name(EVENTS_EXCHANGE), bus.broker_name(queue)
    keys = set()
    for line in out.decode().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] == source and parts[1] == destination:
            keys.add(parts[2])
    return keys


def event(event_type: str, seq: int, execution_id: str) -> bytes:
    return events_pb2.Event(
        type=event_type,
        execution_id=execution_id,
        workflow_id="w-1",
        node_id="ask" if event_type.startswith("node.") else "",
        seq=seq,
        tenant_id=TENANT,
    ).SerializeToString()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


# The row locks that order a reconcile with creates are PostgreSQL's.
@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)
async def test_the_queue_is_bound_to_what_subscriptions_need(
    sessions: async_sessionmaker[AsyncSession], bus: EventBus, receiver: Receiver
) -> None:
    queue = f"log.webhooks.{uuid.uuid4().hex[:8]}"
    key = generate_key()
    deliverer = WebhookDeliverer(
        sessions,
        bus,
        key,
        DeliveryPolicy(queue=queue, allow_hosts=("127.0.0.1",), backoff_s=0.1, backoff_max_s=0.2),
    )
    subscriptions = WebhookSubscriptions(
        sessions, bus, key, queue=queue, grace_s=300, changed=deliverer.forget
    )
    # The grace period over: what the reconcile of a later start or round does.
    later = WebhookSubscriptions(sessions, bus, key, queue=queue, grace_s=0)
    await deliverer.start()
    try:
        assert await subscriptions.reconcile() == ([], [])
        assert await bound_keys(bus, queue) == set()
        failed, _ = await subscriptions.create(
            TENANT, WebhookSpec(url=receiver.url, events=["execution.failed"])
        )
        # No subscription to node events: no node binding.
        assert await bound_keys(bus, queue) == {"execution.failed"}

        execution_id = str(uuid.uuid4())
        await bus.publish(EVENTS_EXCHANGE, "execution.failed", event("execution.failed", 1, "x"))
        await assert_eventually(lambda: len(receiver.received) == 1)
        # The deliverer has just read (and cached) the tenant's subscriptions: the new one
        # must see the next event all the same.
        waiting, _ = await subscriptions.create(
            TENANT, WebhookSpec(url=receiver.url, events=["node.waiting"])
        )
        assert await bound_keys(bus, queue) == {"execution.failed", "node.waiting"}
        await bus.publish(EVENTS_EXCHANGE, "node.waiting", event("node.waiting", 2, execution_id))
        await assert_eventually(lambda: len(receiver.received) == 2)
        delivered = json.loads(receiver.received[1]["body"])
        assert (delivered["type"], delivered["execution_id"]) == ("node.waiting", execution_id)

        await subscriptions.delete(TENANT, waiting.id)
        # Ensured a moment ago: kept within the grace period (a create may be in flight).
        assert await subscriptions.reconcile() == ([], [])
        assert await bound_keys(bus, queue) == {"execution.failed", "node.waiting"}
        assert await later.reconcile() == ([], ["node.waiting"])
        assert await bound_keys(bus, queue) == {"execution.failed"}
        # A second replica's reconcile finds nothing more to do.
        assert await later.reconcile() == ([], [])

        await subscriptions.delete(TENANT, failed.id)
        assert await later.reconcile() == ([], ["execution.failed"])
        assert await bound_keys(bus, queue) == set()
    finally:
        await deliverer.stop()
        if isinstance(bus, RabbitBus):
            await delete_rabbit_queues(bus.broker_name(queue))
