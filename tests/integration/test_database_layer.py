"""The workflow service's database layer on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from libs.common.db import create_engine, create_schema, session_factory, utcnow
from services.workflow import repository as repo
from services.workflow.models import (
    EventRow,
    ExecutionRow,
    NodeRunRow,
    WorkflowRow,
    WorkflowVersionRow,
)
from services.workflow.pg_writer import BatchWriter


def _event(execution_id: str, seq: int, data: Any = None, workflow_id: str = "") -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "seq": seq,
        "type": "node.started",
        "node_id": "n0",
        "ts": utcnow(),
        "data": data,
        "trace_id": "",
        "tenant_id": "t1",
        "workflow_id": workflow_id,
    }


async def test_execution_state_round_trip(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await create_schema(engine)
        sessions = session_factory(engine)
        workflow_id, execution_id = str(uuid.uuid4()), str(uuid.uuid4())
        async with sessions() as session, session.begin():
            session.add(WorkflowRow(id=workflow_id, tenant_id="t1", name="w"))
            await session.flush()
            session.add(WorkflowVersionRow(workflow_id=workflow_id, version=1, definition={"a": 1}))
            session.add(
                ExecutionRow(
                    id=execution_id,
                    tenant_id="t1",
                    workflow_id=workflow_id,
                    workflow_version=1,
                    status="running",
                    inputs={"x": [1, 2]},
                    owner="replica-a",
                    lease_expires_at=utcnow() + dt.timedelta(seconds=30),
                    idempotency_key="k1",
                )
            )
            await session.flush()
            await repo.insert_node_runs(
                session,
                [
                    {"execution_id": execution_id, "node_id": f"n{i}", "node_type": "noop"}
                    for i in range(3)
                ],
            )

        # One batch: fenced on the owner, bulk node updates of two shapes, events.
        async with engine.begin() as connection:
            assert await repo.fence_execution(
                connection, execution_id, "replica-a", {"last_seq": 2}
            )
            await repo.update_node_runs(
                connection,
                [
                    {
                        "execution_id": execution_id,
                        "node_id": "n0",
                        "status": "succeeded",
                        "output": {"v": "é"},
                    },
                    {
                        "execution_id": execution_id,
                        "node_id": "n1",
                        "status": "running",
                        "attempt": 1,
                    },
                ],
            )
            await repo.insert_event_rows(
                connection,
                [_event(execution_id, seq, {"seq": seq}, workflow_id) for seq in (1, 2)],
            )
        # Another replica cannot write through the fence.
        async with engine.begin() as connection:
            assert not await repo.fence_execution(
                connection, execution_id, "replica-b", {"last_seq": 99}
            )

        async with sessions() as session:
            row = await repo.get_execution(session, "t1", execution_id)
            assert row is not None and row.last_seq == 2 and row.inputs == {"x": [1, 2]}
            assert row.lease_expires_at is not None and row.lease_expires_at.tzinfo is not None
            assert await repo.get_execution(session, "other-tenant", execution_id) is None
            by_key = await repo.find_execution_by_key(session, "t1", "k1")
            assert by_key is not None and by_key.id == execution_id
            nodes = {n.node_id: n for n in await repo.node_runs(session, execution_id)}
            assert nodes["n0"].status == "succeeded" and nodes["n0"].output == {"v": "é"}
            assert nodes["n1"].status == "running" and nodes["n1"].attempt == 1
            assert nodes["n2"].status == "pending"
            events = await repo.events_after(session, execution_id, 0)
            assert [e.seq for e in events] == [1, 2]
            assert [e.seq for e in await repo.events_after(session, execution_id, 1)] == [2]
            # The batch's outbox row, naming both events, until the relay deletes it.
            due = await repo.due_outbox(session, 10)
            assert due == [(execution_id, 1, 2)]
            assert [e.seq for e in await repo.outbox_events(session, due)] == [1, 2]

        async with engine.begin() as connection:
            await repo.delete_outbox(connection, [(execution_id, 1, 2)])
        async with sessions() as session:
            assert await repo.due_outbox(session, 10) == []
            rows, total = await repo.list_executions(session, "t1", 0, 10, status="running")
            assert total == 1 and rows[0].id == execution_id
            assert (await repo.list_executions(session, "t1", 0, 10, status="failed"))[1] == 0
    finally:
        await engine.dispose()


async def test_the_outbox_keeps_exactly_the_batches_not_relayed(database_url: str) -> None:
    # Three executions' batches; the relay confirmed some (one range may cover two batches,
    # on PostgreSQL every range is one statement): the others stay for the sweep.
    engine = create_engine(database_url)
    try:
        await create_schema(engine)
        sessions = session_factory(engine)
        a, b, c = sorted(str(uuid.uuid4()) for _ in range(3))
        batches = {a: [(1, 2), (3, 5)], b: [(1, 1), (2, 3), (4, 5)], c: [(1, 5)]}
        for execution_id, ranges in batches.items():
            for low, high in ranges:
                async with engine.begin() as connection:
                    await repo.insert_event_rows(
                        connection, [_event(execution_id, seq) for seq in range(low, high + 1)]
                    )
        async with sessions() as session:
            every = await repo.due_outbox(session, 100)
            later = await repo.due_outbox(session, 100, utcnow() - dt.timedelta(seconds=60))
        assert sorted(every) == sorted(
            (execution_id, low, high)
            for execution_id, ranges in batches.items()
            for low, high in ranges
        )
        assert later == []  # none is older than a minute
        # a's two batches in one range, b's middle one; c's range falls short of its batch.
        async with engine.begin() as connection:
            await repo.delete_outbox(connection, [(b, 2, 3), (a, 1, 5), (c, 1, 4)])
        async with sessions() as session:
            left = await repo.due_outbox(session, 100)
            assert sorted(left) == [(b, 1, 1), (b, 4, 5), (c, 1, 5)]
            events = await repo.outbox_events(session, left)
        assert [(e.execution_id, e.seq) for e in events] == [
            (b, 1),
            (b, 4),
            (b, 5),
            *((c, seq) for seq in range(1, 6)),
        ]
    finally:
        await engine.dispose()


async def test_expired_lease_is_claimed_once(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await create_schema(engine)
        sessions = session_factory(engine)
        execution_id = str(uuid.uuid4())
        async with sessions() as session, session.begin():
            session.add(
                ExecutionRow(
                    id=execution_id,
                    workflow_id="w",
                    workflow_version=1,
                    status="running",
                    owner="dead-replica",
                    lease_expires_at=utcnow() - dt.timedelta(seconds=1),
                )
            )
        async with sessions() as session:
            assert execution_id in await repo.orphaned_executions(session)
        until = utcnow() + dt.timedelta(seconds=30)
        async with sessions() as session, session.begin():
            assert await repo.claim_execution(session, execution_id, "replica-a", until)
        async with sessions() as session, session.begin():
            # The lease is live now: a second claimant loses.
            assert not await repo.claim_execution(session, execution_id, "replica-b", until)
        async with sessions() as session, session.begin():
            held = await repo.renew_leases(session, "replica-a", [execution_id], until)
            assert held == {execution_id}
            assert await repo.renew_leases(session, "replica-b", [execution_id], until) == set()
        async with sessions() as session:
            assert execution_id not in await repo.orphaned_executions(session)
            assert await session.get(NodeRunRow, (execution_id, "x")) is None
            assert await session.get(EventRow, (execution_id, 1)) is None
    finally:
        await engine.dispose()


async def test_the_postgresql_batch_writer_round_trips_every_column(pg_url: str) -> None:
    """The hot-path statement (one CTE, rows as JSON documents) writes what the SQLAlchemy
    models read back: JSON values (null stays NULL), aware timestamps, events, the fence."""
    engine = create_engine(pg_url)
    writer = BatchWriter(pg_url)
    try:
        await create_schema(engine)
        sessions = session_factory(engine)
        workflow_id, execution_id = str(uuid.uuid4()), str(uuid.uuid4())
        async with sessions() as session, session.begin():
            session.add(WorkflowRow(id=workflow_id, tenant_id="t1", name="w"))
            await session.flush()
            session.add(WorkflowVersionRow(workflow_id=workflow_id, version=1, definition={}))
            session.add(
                ExecutionRow(
                    id=execution_id,
                    tenant_id="t1",
                    workflow_id=workflow_id,
                    workflow_version=1,
                    status="running",
                    owner="replica-a",
                )
            )
            await session.flush()
            await repo.insert_node_runs(
                session,
                [
                    {"execution_id": execution_id, "node_id": node_id, "node_type": "noop"}
                    for node_id in ("a", "b")
                ],
            )
        started = utcnow() - dt.timedelta(seconds=1)
        finished = utcnow()
        base = {
            "error": None,
            "waiting": None,
            "due_at": None,
            "started_at": started,
            "attempt": 1,
        }
        nodes: list[dict[str, Any]] = [
            {
                **base,
                "node_id": "a",
                "status": "succeeded",
                "output": {"text": "é \" ' {{ }}", "n": [1, 2.5, None], "deep": {"x": True}},
                "active_ports": ["true"],
                "attempts": [{"attempt": 1, "status": "succeeded"}],
                "inputs": {"inputs": {"q": "?"}},
                "finished_at": finished,
                "checkpoint": None,
            },
            {
                **base,
                "node_id": "b",
                "status": "running",
                "output": None,
                "active_ports": None,
                "attempts": [],
                "inputs": None,
                "finished_at": None,
                "checkpoint": {"index": 2, "previous": {"é": [1, None]}, "outputs": [0, 1]},
            },
        ]
        events = [
            {"seq": 1, "type": "node.completed", "node_id": "a", "ts": finished, "data": {"o": 1}},
            {"seq": 2, "type": "node.started", "node_id": "b", "ts": finished, "data": {}},
        ]
        write: dict[str, Any] = {
            "execution_id": execution_id,
            "execution_values": {"last_seq": 2, "outputs": {"r": [1]}},
            "nodes": nodes,
            "events": events,
            "trace_id": "trace-1",
            "tenant_id": "t1",
            "workflow_id": workflow_id,
        }
        assert await writer.write(owner="replica-a", **write)
        # Written twice (a retry after a lost reply): the events are not duplicated.
        assert await writer.write(owner="replica-a", **write)
        # Another replica writes nothing through the fence.
        changed = {**write, "execution_values": {"last_seq": 99}, "nodes": [], "events": []}
        assert not await writer.write(owner="replica-b", **changed)

        async with sessions() as session:
            row = await repo.get_execution(session, "t1", execution_id)
            assert row is not None and row.last_seq == 2 and row.outputs == {"r": [1]}
            stored = {n.node_id: n for n in await repo.node_runs(session, execution_id)}
            for node in nodes:
                got = stored[node["node_id"]]
                for column in (
                    "status",
                    "attempt",
                    "output",
                    "active_ports",
                    "attempts",
                    "checkpoint",
                ):
                    assert getattr(got, column) == node[column], column
                assert got.inputs == node["inputs"] and got.error is None
                assert got.started_at == started and got.finished_at == node["finished_at"]
            stored_events = await repo.events_after(session, execution_id, 0)
            assert [(e.seq, e.type, e.node_id, e.data, e.ts) for e in stored_events] == [
                (e["seq"], e["type"], e["node_id"], e["data"], e["ts"]) for e in events
            ]
            assert {e.trace_id for e in stored_events} == {"trace-1"}
            # One outbox row for the batch; the retry, whose events were there, adds none.
            assert await repo.due_outbox(session, 10) == [(execution_id, 1, 2)]

        # An agent's step: b's journal appended and nothing else of its row (a journal-only
        # row: `at` and the new entries), beside a full row for a; retried after a lost
        # reply, the entries are not appended twice; through another owner's fence, nothing.
        first, second = {"type": "model_call", "step": "0"}, {"type": "tool_call", "step": "0"}
        journaled = {**nodes[1], "checkpoint": {"journal": [first], "k": 1}}
        assert await writer.write(owner="replica-a", **{**write, "nodes": [journaled]})
        step: dict[str, Any] = {
            **write,
            "execution_values": {"last_seq": 3},
            "nodes": [
                {**nodes[0], "status": "failed"},
                {"node_id": "b", "at": 1, "journal_append": [second]},
            ],
            "events": [
                {"seq": 3, "type": "agent.step", "node_id": "b", "ts": finished, "data": {}}
            ],
        }
        assert await writer.write(owner="replica-a", **step)
        assert await writer.write(owner="replica-a", **step)
        assert not await writer.write(
            owner="replica-b", **{**step, "nodes": [{**step["nodes"][1], "at": 2}]}
        )
        async with sessions() as session:
            stored = {n.node_id: n for n in await repo.node_runs(session, execution_id)}
            assert stored["a"].status == "failed"
            got = stored["b"]
            assert got.checkpoint == {"journal": [first, second], "k": 1}
            assert (got.status, got.inputs, got.attempt) == ("running", None, 1)
            assert [e.seq for e in await repo.events_after(session, execution_id, 2)] == [3]
            assert sorted(await repo.due_outbox(session, 10)) == [
                (execution_id, 1, 2),
                (execution_id, 3, 3),
            ]

        async def stored_b() -> tuple[Any, int]:
            """b's checkpoint as the row holds it, and its node_journal rows."""
            async with engine.connect() as connection:
                row = await connection.execute(
                    text(
                        "SELECT checkpoint, (SELECT count(*) FROM node_journal"
                        " WHERE execution_id = :e AND node_id = 'b') FROM node_runs"
                        " WHERE execution_id = :e AND node_id = 'b'"
                    ),
                    {"e": execution_id},
                )
                checkpoint, appended = row.one()
                return checkpoint, appended

        # The journal-only write left b's row alone: its entry is a node_journal row.
        assert await stored_b() == ({"journal": [first], "k": 1}, 1)
        # The next write of b's whole row folds what was appended (then its own new entries)
        # into the checkpoint, and the journal rows go.
        third = {"type": "final", "step": "end"}
        ended = {**nodes[1], "status": "succeeded", "checkpoint": None, "journal_append": [third]}
        assert await writer.write(owner="replica-a", **{**write, "nodes": [ended]})
        assert await stored_b() == ({"journal": [first, second, third], "k": 1}, 0)
        # A checkpoint written whole (a takeover's first write) replaces what was appended.
        assert await writer.write(owner="replica-a", **{**step, "nodes": [step["nodes"][1]]})
        assert (await stored_b())[1] == 1
        whole = {**nodes[1], "checkpoint": {"journal": [second]}, "journal_append": None}
        assert await writer.write(owner="replica-a", **{**write, "nodes": [whole]})
        assert await stored_b() == ({"journal": [second]}, 0)
    finally:
        await writer.close()
        await engine.dispose()


async def test_the_postgresql_writer_inserts_an_execution_with_its_nodes(pg_url: str) -> None:
    engine = create_engine(pg_url)
    writer = BatchWriter(pg_url)
    try:
        await create_schema(engine)
        sessions = session_factory(engine)
        workflow_id = str(uuid.uuid4())
        async with sessions() as session, session.begin():
            session.add(WorkflowRow(id=workflow_id, tenant_id="t1", name="w"))
        created = utcnow()

        def execution(execution_id: str) -> dict[str, object]:
            row = ExecutionRow(
                id=execution_id,
                tenant_id="t1",
                workflow_id=workflow_id,
                workflow_version=1,
                status="pending",
                inputs={"q": ["é", 1]},
                idempotency_key="same-key",
                depth=0,
                trigger="api",
                trace_id="t" * 32,
                trace_parent="",
                created_at=created,
                owner="replica-a",
                last_seq=0,
                crashes=0,
                priority=7,
            )
            return {c.key: getattr(row, c.key) for c in ExecutionRow.__table__.columns}

        nodes = [
            {
                "node_id": "a",
                "node_type": "noop",
                "status": "succeeded",
                "attempt": 1,
                "attempts": [{"attempt": 1}],
                "output": {"reused": True},
                "active_ports": None,
                "inputs": {},
                "started_at": created,
                "finished_at": created,
            },
            {
                "node_id": "b",
                "node_type": "merge",
                "status": "pending",
                "attempt": 0,
                "attempts": [],
                "output": None,
                "active_ports": None,
                "inputs": None,
                "started_at": None,
                "finished_at": None,
                # A fork's agent node starts from an edited journal.
                "checkpoint": {"journal": [{"type": "final", "step": "end", "text": "é"}]},
            },
        ]
        first = str(uuid.uuid4())
        started: list[dict[str, Any]] = [
            {"seq": seq, "type": "node.started", "node_id": "a", "ts": created, "data": {}}
            for seq in (1, 2)
        ]
        await writer.insert_execution(execution(first), nodes, started)
        # The same idempotency key again: the unique index refuses it, as the ORM would.
        with pytest.raises(IntegrityError):
            await writer.insert_execution(execution(str(uuid.uuid4())), nodes)
        async with sessions() as session:
            row = await repo.get_execution(session, "t1", first)
            assert row is not None and row.inputs == {"q": ["é", 1]}
            assert row.created_at == created and row.owner == "replica-a"
            assert row.idempotency_key == "same-key" and row.outputs is None
            stored = {n.node_id: n for n in await repo.node_runs(session, first)}
            assert stored["a"].output == {"reused": True} and stored["a"].attempts == [
                {"attempt": 1}
            ]
            assert stored["a"].finished_at == created and stored["b"].node_type == "merge"
            assert stored["b"].status == "pending" and stored["b"].output is None
            assert stored["a"].checkpoint is None
            assert stored["b"].checkpoint == {
                "journal": [{"type": "final", "step": "end", "text": "é"}]
            }
            _, total = await repo.list_executions(session, "t1", 0, 10)
            assert total == 1  # the refused duplicate left nothing behind
            # The first batch's events and their outbox row went in with the execution.
            assert [e.seq for e in await repo.events_after(session, first, 0)] == [1, 2]
            assert await repo.due_outbox(session, 10) == [(first, 1, 2)]
        # The writer's connection survived the refused statement.
        assert len(writer._idle) == 1
    finally:
        await writer.close()
        await engine.dispose()
