"""The PostgreSQL batch writer: group commit (batches of several executions that queue while a
write is in flight go out in one statement, each fenced on its own execution's owner) and the
fold of an agent's appended journal into its checkpoint."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from libs.common.db import create_engine, create_schema, session_factory, utcnow
from services.workflow import pg_writer
from services.workflow import repository as repo
from services.workflow.models import ExecutionRow, WorkflowRow
from services.workflow.pg_writer import BatchWriter


class _Spy:
    """The statements a writer sends, in order ('alone' or 'group')."""

    def __init__(self, writer: BatchWriter) -> None:
        self.sent: list[str] = []
        original = writer._fetchrow

        async def fetchrow(statement: str, args: list[Any]) -> Any:
            self.sent.append("group" if statement is pg_writer._GROUP else "alone")
            return await original(statement, args)

        writer._fetchrow = fetchrow  # type: ignore[method-assign]


@pytest.fixture
async def setup(pg_url: str) -> AsyncIterator[tuple[BatchWriter, str, Any]]:
    engine = create_engine(pg_url)
    writer = BatchWriter(pg_url, group_limit=1)
    try:
        await create_schema(engine)
        workflow_id = str(uuid.uuid4())
        async with session_factory(engine)() as session, session.begin():
            session.add(WorkflowRow(id=workflow_id, tenant_id="t1", name="w"))
        yield writer, workflow_id, engine
    finally:
        await writer.close()
        await engine.dispose()


async def _executions(writer: BatchWriter, workflow_id: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        row = ExecutionRow(
            id=str(uuid.uuid4()),
            tenant_id="t1",
            workflow_id=workflow_id,
            workflow_version=1,
            status="running",
            depth=0,
            trigger="api",
            trace_id="t" * 32,
            trace_parent="",
            created_at=utcnow(),
            owner="replica-a",
            last_seq=0,
            crashes=0,
            priority=5,
        )
        values = {c.key: getattr(row, c.key) for c in ExecutionRow.__table__.columns}
        node = {"node_id": "a", "node_type": "noop", "status": "pending", "attempt": 0}
        await writer.insert_execution(
            values, [{**node, "attempts": [], "checkpoint": {"journal": ["j0"], "k": 1}}]
        )
        ids.append(row.id)
    return ids


def _batch(execution_id: str, workflow_id: str, seq: int, **values: Any) -> dict[str, Any]:
    now = utcnow()
    return {
        "execution_id": execution_id,
        "owner": "replica-a",
        "execution_values": {"last_seq": seq, **values},
        "nodes": [
            {
                "node_id": "a",
                "status": "succeeded",
                "attempt": 1,
                "output": {"text": f"é {seq}"},
                "error": None,
                "active_ports": None,
                "attempts": [{"attempt": 1}],
                "waiting": None,
                "inputs": {"x": None},
                "started_at": now,
                "finished_at": now,
                "due_at": None,
                "checkpoint": None,
            }
        ],
        "events": [
            {"seq": seq, "type": "node.completed", "node_id": "a", "ts": now, "data": {"s": seq}}
        ],
        "trace_id": "trace",
        "tenant_id": "t1",
        "workflow_id": workflow_id,
    }


async def test_a_lone_write_goes_out_at_once(setup: tuple[BatchWriter, str, Any]) -> None:
    writer, workflow_id, _ = setup
    [execution_id] = await _executions(writer, workflow_id, 1)
    spy = _Spy(writer)
    task = asyncio.ensure_future(writer.write(**_batch(execution_id, workflow_id, 1)))
    await asyncio.sleep(0)
    # Sent in the turn it was asked for, by itself (nothing queued it behind another write).
    assert spy.sent == ["alone"]
    assert await task


async def test_queued_batches_share_one_statement_each_fenced(
    setup: tuple[BatchWriter, str, Any],
) -> None:
    """Three executions' batches asked for at once: the first goes alone, the two that
    queued behind it go in one statement; the one whose owner changed writes nothing and
    only its writer hears it (False: the engine's LostOwnership), the other commits, its final
    NOTIFY delivered."""
    writer, workflow_id, engine = setup
    first, ended, taken = await _executions(writer, workflow_id, 3)
    dsn = make_url(str(engine.url)).set(drivername="postgresql").render_as_string(False)
    other = await asyncpg.connect(dsn)
    heard: list[str] = []
    await other.add_listener("heddle_test_end", lambda *args: heard.append(args[3]))
    await other.execute("UPDATE executions SET owner = 'replica-b' WHERE id = $1", taken)
    spy = _Spy(writer)
    finished = utcnow() - dt.timedelta(seconds=1)
    final = _batch(
        ended,
        workflow_id,
        7,
        status="succeeded",
        outputs={"r": [1, None]},
        error=None,
        finished_at=finished,
        owner=None,
    )
    try:
        results = await asyncio.gather(
            writer.write(**_batch(first, workflow_id, 1)),
            writer.write(**final, notify="heddle_test_end"),
            writer.write(**{**_batch(taken, workflow_id, 1), "notify": "heddle_test_end"}),
        )
        assert results == [True, True, False]
        assert spy.sent == ["alone", "group"]
        for _ in range(50):  # the notice is delivered at the commit, read by another loop turn
            if heard:
                break
            await asyncio.sleep(0.02)
        assert heard == [ended]
    finally:
        await other.close()

    async with session_factory(engine)() as session:
        row = await repo.get_execution(session, "t1", ended)
        assert row is not None
        assert (row.status, row.outputs, row.error, row.owner) == (
            "succeeded",
            {"r": [1, None]},
            None,
            None,
        )
        assert (row.finished_at, row.last_seq, row.started_at) == (finished, 7, None)
        [node] = await repo.node_runs(session, ended)
        assert (node.status, node.output, node.attempts) == (
            "succeeded",
            {"text": "é 7"},
            [{"attempt": 1}],
        )
        assert [
            (e.seq, e.data, e.trace_id) for e in await repo.events_after(session, ended, 0)
        ] == [(7, {"s": 7}, "trace")]
        fenced = await repo.get_execution(session, "t1", taken)
        assert fenced is not None and fenced.last_seq == 0 and fenced.status == "running"
        assert await repo.events_after(session, taken, 0) == []
        [untouched] = await repo.node_runs(session, taken)
        assert untouched.status == "pending"
        # One outbox row per execution whose events were inserted; none for the fenced one.
        assert sorted(await repo.due_outbox(session, 10)) == sorted([(first, 1, 1), (ended, 7, 7)])


async def test_a_failing_batch_does_not_fail_its_group(
    setup: tuple[BatchWriter, str, Any],
) -> None:
    """A batch the database refuses fails the group's statement: the batches are then written
    one by one, the others commit and only that one's writer gets the error."""
    writer, workflow_id, engine = setup
    first, good, bad = await _executions(writer, workflow_id, 3)
    spy = _Spy(writer)
    broken = _batch(bad, workflow_id, 1)
    broken["nodes"][0]["status"] = "x" * 100  # longer than the column
    results = await asyncio.gather(
        writer.write(**_batch(first, workflow_id, 1)),
        writer.write(**_batch(good, workflow_id, 1)),
        writer.write(**broken),
        return_exceptions=True,
    )
    assert results[:2] == [True, True]
    assert isinstance(results[2], asyncpg.StringDataRightTruncationError)
    assert spy.sent == ["alone", "group", "alone", "alone"]
    async with session_factory(engine)() as session:
        assert [e.seq for e in await repo.events_after(session, good, 0)] == [1]
        assert await repo.events_after(session, bad, 0) == []
    # The writer goes on: the next write of the refused execution commits.
    assert await writer.write(**_batch(bad, workflow_id, 1))


async def test_a_batch_cancelled_while_queued_is_not_written(
    setup: tuple[BatchWriter, str, Any],
) -> None:
    writer, workflow_id, engine = setup
    first, dropped = await _executions(writer, workflow_id, 2)
    spy = _Spy(writer)
    lone = asyncio.ensure_future(writer.write(**_batch(first, workflow_id, 1)))
    await asyncio.sleep(0)
    queued = asyncio.ensure_future(writer.write(**_batch(dropped, workflow_id, 1)))
    await asyncio.sleep(0)
    queued.cancel()
    assert await lone
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert spy.sent == ["alone"]
    async with session_factory(engine)() as session:
        assert await repo.events_after(session, dropped, 0) == []


async def test_the_fold_takes_the_journal_rows_without_a_gap_as_the_reader_does(
    setup: tuple[BatchWriter, str, Any],
) -> None:
    """On a stored journal of one entry, journal-only rows at 1, 2 and 3 (two entries) continue
    it to 5 entries; the row at 4 overlaps them, the one at 7 is past a gap. The reader
    (repository.node_runs) takes 1, 2 and 3 and leaves the other two out; the next write of
    the whole row folds the same entries into the checkpoint."""
    writer, workflow_id, engine = setup
    [execution_id] = await _executions(writer, workflow_id, 1)
    rows = ((1, ["j1"]), (2, ["j2"]), (4, ["overlap"]), (7, ["past a gap"]), (3, ["j3", "j4"]))
    for at, entries in rows:
        journal = {"node_id": "a", "at": at, "journal_append": entries}
        assert await writer.write(**{**_batch(execution_id, workflow_id, at), "nodes": [journal]})
    read = ["j0", "j1", "j2", "j3", "j4"]
    async with session_factory(engine)() as session:
        [node] = await repo.node_runs(session, execution_id)
        assert node.checkpoint == {"journal": read, "k": 1}
    ended = _batch(execution_id, workflow_id, 9)
    ended["nodes"][0] |= {"checkpoint": None, "journal_append": ["end"]}
    assert await writer.write(**ended)
    async with session_factory(engine)() as session:
        [node] = await repo.node_runs(session, execution_id)
        assert node.checkpoint == {"journal": [*read, "end"], "k": 1}


async def test_a_large_batch_does_not_hold_the_others(setup: tuple[BatchWriter, str, Any]) -> None:
    """A fan-out's wave in flight: another execution's small batch goes out beside it at once,
    not queued behind it."""
    writer, workflow_id, _ = setup
    wide, small = await _executions(writer, workflow_id, 2)
    spy = _Spy(writer)
    wave = _batch(wide, workflow_id, 1)
    now = utcnow()
    wave["events"] = [
        {"seq": seq, "type": "node.started", "node_id": "a", "ts": now, "data": {}}
        for seq in range(1, pg_writer._LARGE + 2)
    ]
    large = asyncio.ensure_future(writer.write(**wave))
    await asyncio.sleep(0)
    assert spy.sent == ["alone"]
    beside = asyncio.ensure_future(writer.write(**_batch(small, workflow_id, 1)))
    await asyncio.sleep(0)
    assert spy.sent == ["alone", "alone"]
    assert await large and await beside


async def test_a_group_folds_the_journal_of_its_batches_only(
    setup: tuple[BatchWriter, str, Any],
) -> None:
    """Two executions with journal-only rows; a group of three batches where one ends its
    agent node (the whole row, folding its journal) and one only appends: the folding one's
    node_journal rows are in its checkpoint and gone, the other's stay and read as before."""
    writer, workflow_id, engine = setup
    first, folding, appending = await _executions(writer, workflow_id, 3)
    for execution_id in (folding, appending):
        journal = {"node_id": "a", "at": 1, "journal_append": ["j1"]}
        batch = {**_batch(execution_id, workflow_id, 1), "nodes": [journal]}
        assert await writer.write(**batch)
    spy = _Spy(writer)
    ended = _batch(folding, workflow_id, 2)
    ended["nodes"][0] |= {"checkpoint": None, "journal_append": ["end"]}
    more = {"node_id": "a", "at": 2, "journal_append": ["j2"]}
    results = await asyncio.gather(
        writer.write(**_batch(first, workflow_id, 1)),
        writer.write(**ended),
        writer.write(**{**_batch(appending, workflow_id, 2), "nodes": [more]}),
    )
    assert results == [True, True, True]
    assert spy.sent == ["alone", "group"]
    async with session_factory(engine)() as session:
        [node] = await repo.node_runs(session, folding)
        assert node.checkpoint == {"journal": ["j0", "j1", "end"], "k": 1}
        [other] = await repo.node_runs(session, appending)
        assert other.checkpoint == {"journal": ["j0", "j1", "j2"], "k": 1}
    dsn = make_url(str(engine.url)).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT execution_id, at FROM node_journal ORDER BY execution_id, at"
        )
    finally:
        await connection.close()
    assert [(row[0], row[1]) for row in rows] == [(appending, 1), (appending, 2)]
