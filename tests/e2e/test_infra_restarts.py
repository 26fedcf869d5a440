"""Issue 5 acceptance: RabbitMQ or PostgreSQL restarts under a running execution; the services
ride through it and nothing is lost (outbox relay, database retries, leases).

Each restart sits in `infrastructure_restored()`: PostgreSQL and RabbitMQ run and accept
connections again when the test ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import pytest
from heddle.v1 import events_pb2

from tests.e2e.conftest import (
    E2E,
    RABBIT_URL,
    check_followed,
    check_history,
    check_nodes_succeeded_once,
    create_workflow,
    execute,
    follow_sse,
    infrastructure_restored,
    layered_delays,
    pg_ctl,
    rabbit_ctl,
    read_sse,
    wait_final,
    wait_postgres,
    wait_progress,
    wait_rabbitmq,
)
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e


@dataclass
class BrokerTap:
    """Every event published to `heddle.events`, as received by a consumer of our own."""

    received: dict[str, list[events_pb2.Event]] = field(default_factory=dict)

    def seqs(self, execution_id: str) -> set[int]:
        return {event.seq for event in self.received.get(execution_id, [])}

    def missing(self, execution_id: str, last_seq: int) -> list[int]:
        return sorted(set(range(1, last_seq + 1)) - self.seqs(execution_id))


@contextlib.asynccontextmanager
async def broker_tap() -> AsyncIterator[BrokerTap]:
    """A durable queue bound `#` to heddle.events (it keeps what is published while the
    broker restarts and this consumer reconnects), consumed over a robust connection."""
    tap = BrokerTap()
    name = f"e2e.tap.{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect_robust(RABBIT_URL, reconnect_interval=0.5)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "heddle.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(name, durable=True, auto_delete=False)
        await queue.bind(exchange, "#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            event = events_pb2.Event()
            event.ParseFromString(message.body)
            tap.received.setdefault(event.execution_id, []).append(event)
            await message.ack()

        await queue.consume(on_message)
        yield tap
    finally:
        # Close the consumer first: deleting a queue under a robust consumer makes it
        # re-declare the queue, which then collects every event forever.
        with contextlib.suppress(Exception):
            await connection.close()
        await wait_rabbitmq(timeout=30)
        cleanup = await aio_pika.connect(RABBIT_URL, timeout=10)
        async with cleanup:
            await (await cleanup.channel()).queue_delete(name)


async def test_rabbitmq_restart_mid_run(fresh_topology: E2E) -> None:
    e2e = fresh_topology
    # 8 layers x 10 delays of 0.05-0.2 s, 5 at once: about 3 s of work.
    definition = layered_delays("rabbit-restart", 8, 10, seconds=0.1, max_concurrency=5)
    node_ids = [node["id"] for node in definition["nodes"]]
    async with broker_tap() as tap, e2e.client() as client:
        workflow_id = await create_workflow(client, definition)
        execution_id = await execute(client, workflow_id)
        follower = asyncio.create_task(follow_sse(client, execution_id))
        await wait_progress(e2e, execution_id, completed=10)
        async with infrastructure_restored():
            await rabbit_ctl("stop_app")
            stopped_at = time.monotonic()
            await asyncio.sleep(1.0)
            await rabbit_ctl("start_app")
            await wait_rabbitmq()
        outage_s = time.monotonic() - stopped_at

        execution = await wait_final(client, execution_id, timeout=60)
        check_nodes_succeeded_once(execution, node_ids)
        history = await read_sse(client, execution_id, timeout=30)
        check_history(history, node_ids)
        followed = await asyncio.wait_for(follower, 60)
        check_followed(followed, history)
        last_seq = execution["last_seq"]
        assert len(history) == last_seq

        # Every event reaches the broker (duplicates are allowed, gaps are not); what failed
        # to publish during the outage is published again by the relay's retries or sweep.
        await assert_eventually(
            lambda: not tap.missing(execution_id, last_seq),
            timeout=60,
            interval=0.2,
            message=f"events never published after a {outage_s:.1f}s broker outage: "
            f"{tap.missing(execution_id, last_seq)[:30]}",
        )
        by_seq = {event.seq: event for event in tap.received[execution_id]}
        assert max(by_seq) == last_seq
        for event in history:
            published = by_seq[event["seq"]]
            assert (published.type, published.node_id or None) == (
                event["type"],
                event["node_id"],
            ), event
        # No event of the run is left unpublished in the outbox.
        await assert_eventually(lambda: _unpublished(e2e, execution_id), timeout=15, interval=0.2)

        # The services reconnected: a new execution's events flow through the broker at once.
        follow_up = await execute(client, workflow_id)
        final = await wait_final(client, follow_up, timeout=60)
        assert final["status"] == "succeeded"
        await assert_eventually(
            lambda: not tap.missing(follow_up, final["last_seq"]),
            timeout=10,
            interval=0.1,
            message="events of a run after the restart did not reach the broker promptly",
        )
    e2e.assert_no_crash()
    assert not e2e.internal_errors(followed), "a broker outage must never answer 500"


async def _unpublished(e2e: E2E, execution_id: str) -> bool:
    rows = await e2e.fetch(
        "SELECT count(*) AS n FROM execution_events WHERE execution_id = $1 AND NOT published",
        execution_id,
    )
    return rows[0]["n"] == 0


async def test_postgres_restart_mid_run(fresh_topology: E2E) -> None:
    e2e = fresh_topology
    # 8 layers x 10 delays of 0.1-0.4 s, 5 at once: about 5 s of work.
    definition = layered_delays("postgres-restart", 8, 10, seconds=0.2, max_concurrency=5)
    node_ids = [node["id"] for node in definition["nodes"]]
    async with e2e.client() as client:
        workflow_id = await create_workflow(client, definition)
        execution_id = await execute(client, workflow_id)
        follower = asyncio.create_task(follow_sse(client, execution_id))
        await wait_progress(e2e, execution_id, completed=10)
        async with infrastructure_restored():
            await pg_ctl("stop")
            await asyncio.sleep(2.0)
            await pg_ctl("start")
            await wait_postgres()

        execution = await wait_final(client, execution_id, timeout=90)
        check_nodes_succeeded_once(execution, node_ids)
        history = await read_sse(client, execution_id, timeout=30)
        check_history(history, node_ids)
        followed = await asyncio.wait_for(follower, 60)
        check_followed(followed, history)
        assert len(history) == execution["last_seq"]
        rows = await e2e.fetch(
            "SELECT count(*) AS n, max(seq) AS top FROM execution_events WHERE execution_id = $1",
            execution_id,
        )
        assert rows[0]["n"] == rows[0]["top"] == execution["last_seq"]

        # Still serving after the restart: a new execution runs normally.
        follow_up = await execute(client, workflow_id)
        final = await wait_final(client, follow_up, timeout=60)
        check_nodes_succeeded_once(final, node_ids)
    e2e.assert_no_crash()
    # A database outage is a dependency down: 503 (UNAVAILABLE), never a 500.
    internal = e2e.internal_errors(followed)
    assert not internal, f"database outage answered as 500/internal: {internal[:3]}"
