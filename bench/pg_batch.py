"""The hot-path batch statement alone: what one `BatchWriter.write` costs PostgreSQL.

    python bench/pg_batch.py [--executions 300] [--clients 1,8] [--shapes chain,fanout,...]

A private database (created and dropped here) with the workflow service's schema; for each
shape, `--executions` executions of 10 nodes inserted as a start does, then their batches
written through the tree's `BatchWriter`, from `--clients` concurrent writers (each its own
executions, as runners are): a chain step (one node's end, the next one's start, 2 events),
a fan-out wave (20 nodes started, 20 events), an agent's journal-only write (1 event), the
final write (status, outputs, owner released, NOTIFY). Prints per batch: the client's wall
and CPU, the CPU of the database's backends (from /proc: PostgreSQL runs on this machine)
and the statements sent, with the CPU calibration.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import calibration_ms
from throughput import _cpu_s

from libs.common.db import create_engine, create_schema
from services.workflow.models import ExecutionRow
from services.workflow.pg_writer import BatchWriter

ADMIN = os.environ.get(
    "HEDDLE_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NODES = [f"n{i}" for i in range(10)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _backends(admin: asyncpg.Connection, name: str) -> float:
    pids = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
    return sum(_cpu_s(row["pid"]) for row in pids)


def _node(node_id: str, status: str, seq: int) -> dict[str, Any]:
    now = _now()
    return {
        "node_id": node_id,
        "status": status,
        "attempt": 1,
        "output": {"text": f"out {seq}"} if status == "succeeded" else None,
        "error": None,
        "active_ports": None,
        "attempts": [{"attempt": 1, "status": status, "replica": "node-1"}],
        "waiting": None,
        "inputs": {"inputs": {"q": "x"}, "prev": {"text": "y"}},
        "started_at": now,
        "finished_at": now if status == "succeeded" else None,
        "due_at": None,
        "checkpoint": None,
    }


def _event(seq: int, kind: str, node_id: str) -> dict[str, Any]:
    return {"seq": seq, "type": kind, "node_id": node_id, "ts": _now(), "data": {"attempt": 1}}


def batches(shape: str, step: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict]]:
    """(execution values, nodes, events) of a shape's `step`-th batch of one execution."""
    seq = 1 + step * 20
    if shape == "chain":
        a, b = NODES[step % 9], NODES[step % 9 + 1]
        return (
            {"last_seq": seq + 1},
            [_node(a, "succeeded", seq), _node(b, "running", seq)],
            [_event(seq, "node.completed", a), _event(seq + 1, "node.started", b)],
        )
    if shape == "fanout":
        nodes = [_node(n, "running", seq) for n in NODES]
        events = [_event(seq + i, "node.started", NODES[i % 10]) for i in range(20)]
        return {"last_seq": seq + 19}, nodes, events
    if shape == "journal":
        entry = {"type": "model_call", "step": str(step), "text": "x" * 200}
        return (
            {"last_seq": seq},
            [{"node_id": "n0", "at": step, "journal_append": [entry]}],
            [_event(seq, "agent.step", "n0")],
        )
    if shape == "final":
        return (
            {
                "status": "succeeded",
                "outputs": {"r": "ok"},
                "finished_at": _now(),
                "owner": None,
                "last_seq": seq,
            },
            [_node("n9", "succeeded", seq)],
            [_event(seq, "node.completed", "n9"), _event(seq + 1, "execution.completed", "")],
        )
    raise ValueError(shape)


#: An execution as a start inserts it (the columns it leaves alone NULL), its nodes pending.
_EXECUTION: dict[str, Any] = dict.fromkeys(c.key for c in ExecutionRow.__table__.columns)
_EXECUTION.update(tenant_id="t1", workflow_version=1, status="running", inputs={"q": "x"})
_EXECUTION.update(depth=0, trigger="api", trace_id="t" * 32, trace_parent="", owner="bench")
_EXECUTION.update(last_seq=0, crashes=0, priority=5)
_PENDING = {"status": "pending", "attempt": 0, "attempts": []}


async def _setup(writer: BatchWriter, workflow_id: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        execution_id = str(uuid.uuid4())
        values = {
            **_EXECUTION,
            "id": execution_id,
            "workflow_id": workflow_id,
            "created_at": _now(),
            "lease_expires_at": _now() + dt.timedelta(hours=1),
        }
        # The other node columns NULL; an agent's node starts with an empty journal.
        nodes = [{"node_id": n, "node_type": "noop", **_PENDING} for n in NODES]
        nodes[0]["checkpoint"] = {"journal": []}
        await writer.insert_execution(values, nodes, [])
        ids.append(execution_id)
    return ids


STATEMENTS = [0]
_fetchrow = asyncpg.Connection.fetchrow


async def _counted(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
    STATEMENTS[0] += 1
    return await _fetchrow(self, *args, **kwargs)


asyncpg.Connection.fetchrow = _counted


def _writer(url: str, group_limit: int | None) -> BatchWriter:
    # A base tree's writer may not group: it takes no group_limit.
    return BatchWriter(url) if group_limit is None else BatchWriter(url, group_limit=group_limit)


async def run(
    shape: str,
    clients: int,
    executions: int,
    url: str,
    admin: asyncpg.Connection,
    name: str,
    workflow_id: str,
    group_limit: int | None,
) -> dict[str, float]:
    writer = _writer(url, group_limit)
    try:
        ids = await _setup(writer, workflow_id, executions)
        steps = 1 if shape == "final" else 5
        walls: list[float] = []

        async def client(mine: list[str]) -> None:
            for step in range(steps):
                for execution_id in mine:
                    values, nodes, events = batches(shape, step)
                    began = time.perf_counter()
                    owned = await writer.write(
                        execution_id=execution_id,
                        owner="bench",
                        execution_values=values,
                        nodes=nodes,
                        events=events,
                        trace_id="t" * 32,
                        tenant_id="t1",
                        workflow_id=workflow_id,
                        notify="bench_channel" if shape == "final" else None,
                    )
                    walls.append(time.perf_counter() - began)
                    assert owned

        await writer.write(  # connections open and statements prepared before counting
            execution_id=ids[0],
            owner="bench",
            execution_values={"last_seq": 0},
            nodes=[],
            events=[],
            trace_id="",
            tenant_id="t1",
            workflow_id=workflow_id,
        )
        cpu0 = await _backends(admin, name)
        statements0 = STATEMENTS[0]
        client0 = time.process_time()
        await asyncio.gather(*(client(ids[i::clients]) for i in range(clients)))
        client_cpu = time.process_time() - client0
        cpu1 = await _backends(admin, name)
        statements = STATEMENTS[0] - statements0
        n = len(walls)
        return {
            "batches": n,
            "wall_p50_ms": statistics.median(walls) * 1000,
            "client_cpu_us": client_cpu / n * 1e6,
            "backend_cpu_us": (cpu1 - cpu0) / n * 1e6,
            "statements_per_batch": statements / n,
        }
    finally:
        await writer.close()


def _hot_updates(dsn: str) -> Any:
    async def counts() -> dict[str, tuple[int, int]]:
        connection = await asyncpg.connect(dsn)
        try:
            rows = await connection.fetch(
                "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
            )
        finally:
            await connection.close()
        return {row[0]: (row[1], row[2]) for row in rows}

    return counts


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=300)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--shapes", default="chain,fanout,journal,final")
    parser.add_argument("--group-limit", type=int, default=None)
    parser.add_argument("--fillfactor", type=int, default=None, help="of node_runs, executions")
    args = parser.parse_args()
    print(f"calibration {calibration_ms():.0f} ms, load {os.getloadavg()[0]:.1f}")
    admin = await asyncpg.connect(ADMIN)
    name = f"heddle_bench_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    host = ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql+asyncpg://{host}/{name}"
    try:
        engine = create_engine(url)
        await create_schema(engine)
        await engine.dispose()
        conn = await asyncpg.connect(f"postgresql://{host}/{name}")
        workflow_id = str(uuid.uuid4())
        if args.fillfactor:
            for table in ("node_runs", "executions"):
                await conn.execute(f"ALTER TABLE {table} SET (fillfactor = {args.fillfactor})")
        await conn.execute(
            "INSERT INTO workflows (id, tenant_id, name, description, created_at,"
            " updated_at, latest_version)"
            " VALUES ($1, 't1', 'w', '', now(), now(), 1)",
            workflow_id,
        )
        await conn.close()
        hot = _hot_updates(f"postgresql://{host}/{name}")
        before = await hot()
        for clients in [int(c) for c in args.clients.split(",")]:
            for shape in args.shapes.split(","):
                r = await run(
                    shape,
                    clients,
                    args.executions,
                    url,
                    admin,
                    name,
                    workflow_id,
                    args.group_limit,
                )
                print(
                    f"{shape:8s} clients {clients:2d}: {r['batches']:5.0f} batches, wall p50 "
                    f"{r['wall_p50_ms']:.3f} ms, client CPU {r['client_cpu_us']:.0f} us, "
                    f"backends CPU {r['backend_cpu_us']:.0f} us, statements "
                    f"{r['statements_per_batch']:.2f} per batch"
                )
        await asyncio.sleep(0.5)  # the writers' connections report their counts as they close
        after = await hot()
        for table, (updates, hot_updates) in sorted(after.items()):
            updates -= before.get(table, (0, 0))[0]
            hot_updates -= before.get(table, (0, 0))[1]
            if updates:
                print(f"{table}: {updates} updates, {hot_updates / updates:.0%} HOT")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(f"calibration {calibration_ms():.0f} ms, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
