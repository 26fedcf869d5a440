"""The SQLite batch writer writes the rows the SQLAlchemy Core path writes, byte for byte."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

from libs.common.db import create_engine, create_schema, session_factory
from services.workflow import repository as repo
from services.workflow.models import ExecutionRow, WorkflowRow, WorkflowVersionRow
from services.workflow.sqlite_writer import SQLiteBatchWriter, file_database

EXECUTION_ID = "00000000-0000-0000-0000-00000000e001"
WORKFLOW_ID = "00000000-0000-0000-0000-00000000w001"
AT = dt.datetime(2026, 12, 2, 19, 30, 1, 123456, tzinfo=dt.UTC)


async def _seeded(path: Path) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_schema(engine)
    async with session_factory(engine)() as session, session.begin():
        session.add(WorkflowRow(id=WORKFLOW_ID, tenant_id="t1", name="w", created_at=AT))
        await session.flush()
        session.add(
            WorkflowVersionRow(workflow_id=WORKFLOW_ID, version=1, definition={}, created_at=AT)
        )
        session.add(
            ExecutionRow(
                id=EXECUTION_ID,
                tenant_id="t1",
                workflow_id=WORKFLOW_ID,
                workflow_version=1,
                status="running",
                owner="replica-a",
                created_at=AT,
            )
        )
        await session.flush()
        await repo.insert_node_runs(
            session,
            [
                {"execution_id": EXECUTION_ID, "node_id": node_id, "node_type": "noop"}
                for node_id in ("a", "b", "c")
            ],
        )
    return engine


def _batch() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    execution = {"last_seq": 2, "outputs": {"r": [1, None]}, "error": None, "finished_at": AT}
    nodes: list[dict[str, Any]] = [
        {  # a node's end: every column a runner writes
            "execution_id": EXECUTION_ID,
            "node_id": "a",
            "status": "succeeded",
            "attempt": 1,
            "output": {"text": "é \" ' {{ }}", "n": [1, 2.5, None], "deep": {"x": True}},
            "error": None,
            "active_ports": ["true"],
            "attempts": [{"attempt": 1, "status": "succeeded"}],
            "waiting": None,
            "inputs": {"inputs": {"q": "?"}},
            "started_at": AT - dt.timedelta(seconds=1),
            "finished_at": AT,
            "due_at": None,
            "checkpoint": None,
        },
        {  # another shape: a start
            "execution_id": EXECUTION_ID,
            "node_id": "b",
            "status": "running",
            "attempt": 1,
            "started_at": AT,
        },
    ]
    events = [
        {
            "execution_id": EXECUTION_ID,
            "seq": seq,
            "type": kind,
            "node_id": node_id,
            "ts": AT,
            "data": data,
            "trace_id": "trace-1",
            "tenant_id": "t1",
            "workflow_id": WORKFLOW_ID,
        }
        for seq, kind, node_id, data in (
            (1, "node.completed", "a", {"o": {"é": 1}}),
            (2, "node.started", "b", None),
        )
    ]
    return execution, nodes, events


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("executions", "node_runs", "execution_events")
        } | {
            # The batch's outbox row (its created_at is the write's own time).
            "event_outbox": connection.execute(
                "SELECT execution_id, low_seq, high_seq FROM event_outbox ORDER BY 1, 2"
            ).fetchall()
        }


async def test_the_sqlite_writer_writes_what_the_core_path_writes(tmp_path: Path) -> None:
    core_engine = await _seeded(tmp_path / "core.db")
    fast_engine = await _seeded(tmp_path / "fast.db")
    path = file_database(fast_engine)
    assert path is not None
    writer = SQLiteBatchWriter(fast_engine, path)
    try:
        execution, nodes, events = _batch()
        async with core_engine.begin() as connection:
            assert await repo.fence_execution(connection, EXECUTION_ID, "replica-a", execution)
            await repo.update_node_runs(connection, nodes)
            await repo.insert_event_rows(connection, events)
        assert await writer.write(
            execution_id=EXECUTION_ID,
            owner="replica-a",
            execution_values=execution,
            nodes=nodes,
            events=events,
        )
        assert _rows(tmp_path / "fast.db") == _rows(tmp_path / "core.db")
        assert _rows(tmp_path / "fast.db")["event_outbox"] == [(EXECUTION_ID, 1, 2)]

        # Another replica writes nothing through the fence, with or without columns.
        before = _rows(tmp_path / "fast.db")
        for values in ({"last_seq": 99}, {}):
            assert not await writer.write(
                execution_id=EXECUTION_ID,
                owner="replica-b",
                execution_values=values,
                nodes=[{**nodes[1], "status": "failed"}],
                events=[{**events[0], "seq": 3}],
            )
        assert _rows(tmp_path / "fast.db") == before
        # The owner's batch without execution columns is fenced too, and written.
        assert await writer.write(
            execution_id=EXECUTION_ID,
            owner="replica-a",
            execution_values={},
            nodes=[{**nodes[1], "status": "succeeded"}],
            events=[],
        )
        async with session_factory(fast_engine)() as session:
            stored = {n.node_id: n for n in await repo.node_runs(session, EXECUTION_ID)}
            assert stored["b"].status == "succeeded" and stored["a"].output == nodes[0]["output"]
            assert stored["a"].finished_at == AT
            assert [e.data for e in await repo.events_after(session, EXECUTION_ID, 0)] == [
                {"o": {"é": 1}},
                None,
            ]
    finally:
        await writer.close()
        await core_engine.dispose()
        await fast_engine.dispose()


def test_only_a_file_database_gets_the_writer(tmp_path: Path) -> None:
    assert file_database(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")) == str(
        tmp_path / "a.db"
    )
    assert file_database(create_engine("sqlite+aiosqlite://")) is None
    assert file_database(create_engine("sqlite+aiosqlite:///:memory:")) is None
