"""The relay's outbox rows on SQLite and PostgreSQL: a committed batch's row stays until the
broker has confirmed its events and goes after; a relay killed before the confirm leaves it,
and the next sweep publishes the batch and deletes the row; two relays sweeping one backlog
on PostgreSQL take disjoint parts of it (no deadlock, no event lost, none twice)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from heddle.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.cli.stack import start_stack
from libs.common.bus import InProcessBus
from libs.common.db import create_engine, create_schema, session_factory, utcnow
from libs.common.messages import OutgoingMessage
from services.workflow import repository as repo
from services.workflow.relay import OutboxRelay
from tests.helpers import assert_eventually

# input -> 6 noop -> merge -> output: a fan-out's batches and a chain's.
FAN_OUT = {
    "name": "outbox-fan-out",
    "nodes": [
        {"id": "start", "type": "input"},
        *({"id": f"n{i}", "type": "noop"} for i in range(6)),
        {"id": "join", "type": "merge"},
        {"id": "done", "type": "output", "params": {"value": "ok"}},
    ],
    "edges": [
        *({"source": "start", "target": f"n{i}"} for i in range(6)),
        *({"source": f"n{i}", "target": "join"} for i in range(6)),
        {"source": "join", "target": "done"},
    ],
}


class HeldBus(InProcessBus):
    """Holds every publish until released (its confirm); records what was published."""

    def __init__(self, held: bool = True) -> None:
        super().__init__()
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.holding = 0
        self.keys: list[tuple[str, int]] = []

    async def publish_many(self, exchange: str, messages: Sequence[OutgoingMessage]) -> None:
        self.holding += 1
        await self.release.wait()
        self.holding -= 1
        await asyncio.sleep(0)  # another relay's sweep may run meanwhile
        for _, body, _ in messages:
            event = events_pb2.Event.FromString(body)
            self.keys.append((event.execution_id, event.seq))


def _events(execution_id: str, low: int, high: int) -> list[dict[str, Any]]:
    return [
        {
            "execution_id": execution_id,
            "seq": seq,
            "type": "node.completed",
            "node_id": "n",
            "ts": utcnow(),
            "data": {"seq": seq},
            "trace_id": "",
            "tenant_id": "t",
            "workflow_id": "w",
        }
        for seq in range(low, high + 1)
    ]


async def _commit(engine: AsyncEngine, events: list[dict[str, Any]]) -> None:
    async with engine.begin() as connection:
        await repo.insert_event_rows(connection, events)


async def _outbox(engine: AsyncEngine) -> list[tuple[str, int, int]]:
    async with session_factory(engine)() as session:
        return sorted(await repo.due_outbox(session, 1000))


async def test_the_outbox_row_stays_until_the_confirm_and_a_killed_relay_leaves_it(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        await create_schema(engine)
        sessions = session_factory(engine)
        a, b = "a-" + uuid.uuid4().hex, "b-" + uuid.uuid4().hex
        await _commit(engine, _events(a, 1, 2))
        bus = HeldBus()
        relay = OutboxRelay(sessions, bus)
        loop = asyncio.create_task(relay._publish_loop())
        try:
            relay.enqueue(_events(a, 1, 2))
            await assert_eventually(lambda: bus.holding == 1)
            await relay._mark()
            assert await _outbox(engine) == [(a, 1, 2)]  # not confirmed yet: kept
            bus.release.set()
            await assert_eventually(lambda: relay.published == 2)
            assert await _outbox(engine) == [(a, 1, 2)]  # confirmed, deleted at the next mark
            await relay._mark()
            assert await _outbox(engine) == []
            assert bus.keys == [(a, 1), (a, 2)]

            # The relay dies with b's batch published but not confirmed.
            bus.release.clear()
            await _commit(engine, _events(b, 1, 3))
            relay.enqueue(_events(b, 1, 3))
            await assert_eventually(lambda: bus.holding == 1)
        finally:
            loop.cancel()  # killed: no drain, no mark
        await asyncio.gather(loop, return_exceptions=True)
        assert await _outbox(engine) == [(b, 1, 3)]

        # The next relay's start-up sweep publishes the batch and deletes its row.
        after = HeldBus(held=False)
        assert await OutboxRelay(sessions, after).sweep(None) == 3
        assert after.keys == [(b, 1), (b, 2), (b, 3)]
        assert await _outbox(engine) == []
    finally:
        await engine.dispose()


async def test_two_relays_sweeping_one_backlog_take_disjoint_parts(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        await create_schema(engine)
        sessions = session_factory(engine)
        executions = [f"x{i:02}-{uuid.uuid4().hex[:8]}" for i in range(30)]
        for execution_id in executions:
            for low in range(1, 10, 3):
                await _commit(engine, _events(execution_id, low, low + 2))
        # Two replicas' sweeps at once, in rounds of 7 batches, each publish held a moment.
        buses = [HeldBus(held=False), HeldBus(held=False)]
        relays = [OutboxRelay(sessions, bus, batch_size=7) for bus in buses]
        swept = await asyncio.wait_for(
            asyncio.gather(*(relay.sweep(None) for relay in relays)), timeout=30
        )
        assert sum(swept) == 30 * 9
        keys = [key for bus in buses for key in bus.keys]
        assert sorted(keys) == sorted(
            (execution_id, seq) for execution_id in executions for seq in range(1, 10)
        )
        assert all(bus.keys for bus in buses), "one relay swept the whole backlog"
        assert await _outbox(engine) == []
    finally:
        await engine.dispose()


async def test_a_stacks_runs_leave_no_outbox_row_for_the_sweep(pg_url: str) -> None:
    # The embedded stack on PostgreSQL: every batch its runs commit (the start's first
    # batch with the execution's insert, each step's, a fan-out's) is cleared by the relay's
    # hot path within its mark interval, well before the periodic sweep (every 5 s, only
    # rows older than 5 s) could publish it again.
    stack = await start_stack({"database_url": pg_url}, ephemeral_ports=True)
    engine = create_engine(pg_url)
    try:
        headers = {"Authorization": f"Bearer {stack.admin_key}"} if stack.admin_key else {}
        async with httpx.AsyncClient(
            base_url=stack.gateway_url, timeout=30, headers=headers
        ) as client:
            created = await client.post("/api/v1/workflows", json=FAN_OUT)
            assert created.status_code == 201, created.text
            workflow_id = created.json()["id"]
            runs = await asyncio.gather(
                *(
                    client.post(
                        f"/api/v1/workflows/{workflow_id}/run",
                        params={"wait": 20},
                        json={},
                    )
                    for _ in range(5)
                )
            )
        assert [run.status_code for run in runs] == [200] * 5, [run.text for run in runs]

        async def cleared() -> bool:
            return await _outbox(engine) == []

        await assert_eventually(cleared, timeout=3.0, message="outbox rows left for the sweep")
    finally:
        await engine.dispose()
        await stack.stop()
