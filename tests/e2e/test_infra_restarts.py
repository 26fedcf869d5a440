"""Issue 5 acceptance: RabbitMQ or PostgreSQL restarts under a running execution; the services
ride through it and nothing is lost (outbox relay, database retries, leases).

The restarted servers are private (tests/private_infra.py): a PostgreSQL cluster and a
RabbitMQ node of this module's own, so the machine's shared servers, which every other test
uses at the same time, never stop. Each test runs a fresh topology (and database) on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from heddle.v1 import events_pb2

from libs.cli.topology import TopologyPorts, default_topology, spawn_topology
from tests.e2e.conftest import (
    E2E,
    REDIS_URL,
    _engine_env,
    _failed,
    check_followed,
    check_history,
    check_nodes_succeeded_once,
    create_workflow,
    execute,
    follow_sse,
    layered_delays,
    read_sse,
    run_sync,
    wait_final,
    wait_progress,
)
from tests.helpers import assert_eventually
from tests.private_infra import PrivatePostgres, PrivateRabbitMQ

pytestmark = pytest.mark.e2e


@dataclass
class Servers:
    postgres: PrivatePostgres
    rabbit: PrivateRabbitMQ


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """A private PostgreSQL and RabbitMQ for the module, booted side by side."""
    postgres, rabbit = PrivatePostgres(), PrivateRabbitMQ()

    async def boot() -> None:
        async def postgres_up() -> None:
            await postgres.init()
            await postgres.start()

        await asyncio.gather(postgres_up(), rabbit.start())

    try:
        run_sync(boot())
        yield Servers(postgres, rabbit)
    finally:
        run_sync(rabbit.remove())
        run_sync(postgres.remove())


@pytest.fixture
def restartable(servers: Servers, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[E2E]:
    """A fresh topology (and database) on the private servers."""
    name = f"heddle_e2e_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        admin = await asyncpg.connect(servers.postgres.dsn, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()

    run_sync(create())
    host = f"postgres@127.0.0.1:{servers.postgres.port}"
    specs = default_topology(
        ports=TopologyPorts.free(),
        database_url=f"postgresql+asyncpg://{host}/{name}",
        broker_url=servers.rabbit.url,
        redis_url=REDIS_URL,
        extra_env={
            **_engine_env(),
            # The module's Redis is the shared one: a scheduler lease of this topology's own.
            "HEDDLE_LEADER_LEASE_NAME": f"scheduler:leader:{name}",
        },
    )
    topology = spawn_topology(specs, tmp_path / "logs")
    e2e = E2E(topology, name, specs[0].env["HEDDLE_DATABASE_URL"], f"postgresql://{host}/{name}")
    try:
        run_sync(topology.wait_healthy(timeout_s=90))
        yield e2e
    finally:
        if _failed(request):
            print(f"\n---------- logs of the topology of {request.node.nodeid} ----------")
            print(e2e.logs())
        topology.stop(grace=10)


@contextlib.asynccontextmanager
async def restored(servers: Servers) -> AsyncIterator[None]:
    """Whatever happens inside, the private PostgreSQL and RabbitMQ run after."""
    try:
        yield
    finally:
        if not servers.postgres.running:
            await servers.postgres.start()
        with contextlib.suppress(Exception):
            await servers.rabbit.ctl("start_app")  # an error here: it already runs
        await servers.rabbit.wait_accepting()


@dataclass
class BrokerTap:
    """Every event published to `heddle.events`, as received by a consumer of our own."""

    received: dict[str, list[events_pb2.Event]] = field(default_factory=dict)

    def seqs(self, execution_id: str) -> set[int]:
        return {event.seq for event in self.received.get(execution_id, [])}

    def missing(self, execution_id: str, last_seq: int) -> list[int]:
        return sorted(set(range(1, last_seq + 1)) - self.seqs(execution_id))


@contextlib.asynccontextmanager
async def broker_tap(rabbit: PrivateRabbitMQ) -> AsyncIterator[BrokerTap]:
    """A durable queue bound `#` to heddle.events (it keeps what is published while the
    broker restarts and this consumer reconnects), consumed over a robust connection."""
    tap = BrokerTap()
    name = f"e2e.tap.{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect_robust(rabbit.url, reconnect_interval=0.5)
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
        await rabbit.wait_accepting(timeout=30)
        cleanup = await aio_pika.connect(rabbit.url, timeout=10)
        async with cleanup:
            await (await cleanup.channel()).queue_delete(name)


async def test_rabbitmq_restart_mid_run(restartable: E2E, servers: Servers) -> None:
    e2e = restartable
    # 8 layers x 10 delays of 0.05-0.2 s, 5 at once: about 3 s of work.
    definition = layered_delays("rabbit-restart", 8, 10, seconds=0.1, max_concurrency=5)
    node_ids = [node["id"] for node in definition["nodes"]]
    async with broker_tap(servers.rabbit) as tap, e2e.client() as client:
        workflow_id = await create_workflow(client, definition)
        execution_id = await execute(client, workflow_id)
        follower = asyncio.create_task(follow_sse(client, execution_id))
        await wait_progress(e2e, execution_id, completed=10)
        async with restored(servers):
            await servers.rabbit.ctl("stop_app")
            stopped_at = time.monotonic()
            await asyncio.sleep(1.0)
            await servers.rabbit.ctl("start_app")
            await servers.rabbit.wait_accepting()
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
        # No batch of the run is left in the outbox.
        await assert_eventually(lambda: _relayed(e2e, execution_id), timeout=15, interval=0.2)

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


async def _relayed(e2e: E2E, execution_id: str) -> bool:
    rows = await e2e.fetch(
        "SELECT count(*) AS n FROM event_outbox WHERE execution_id = $1", execution_id
    )
    return rows[0]["n"] == 0


async def test_postgres_restart_mid_run(restartable: E2E, servers: Servers) -> None:
    e2e = restartable
    # 8 layers x 10 delays of 0.1-0.4 s, 5 at once: about 5 s of work.
    definition = layered_delays("postgres-restart", 8, 10, seconds=0.2, max_concurrency=5)
    node_ids = [node["id"] for node in definition["nodes"]]
    async with e2e.client() as client:
        workflow_id = await create_workflow(client, definition)
        execution_id = await execute(client, workflow_id)
        follower = asyncio.create_task(follow_sse(client, execution_id))
        await wait_progress(e2e, execution_id, completed=10)
        async with restored(servers):
            await servers.postgres.stop()
            await asyncio.sleep(2.0)
            await servers.postgres.start()

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
