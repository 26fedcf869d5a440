"""The liveness watch of workflow replicas (services/workflow/liveness.py) on a private
PostgreSQL that the tests stop and start: a replica whose session vanished has its
executions released; a restart of PostgreSQL (every session gone at once) releases nothing
while the replicas reconnect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.common.db import create_engine, utcnow
from libs.migrations import upgrade
from services.workflow.liveness import ReplicaLiveness
from tests.helpers import assert_eventually
from tests.private_infra import PrivatePostgres

pytestmark = pytest.mark.integration

SETTLE_S = 1.5


@pytest.fixture
async def postgres() -> AsyncIterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        await server.init()
        await server.start()
        engine = create_engine(server.url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        yield server
    finally:
        await server.remove()


class Replica:
    def __init__(self, postgres: PrivatePostgres, replica_id: str) -> None:
        self.released: list[list[str]] = []
        self.liveness = ReplicaLiveness(
            postgres.url,
            replica_id,
            check_s=0.1,
            settle_s=SETTLE_S,
            on_released=self.released.append,
        )


async def _execution_owned_by(dsn: str, owner: str) -> str:
    execution_id = str(uuid.uuid4())
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO executions (id, tenant_id, workflow_id, workflow_version, status, "
            "depth, trigger, trace_id, trace_parent, created_at, owner, lease_expires_at, "
            "last_seq, crashes) VALUES ($1, 't', 'w', 1, 'running', 0, 'api', '', '', $2, $3, "
            "$4, 0, 0)",
            execution_id,
            utcnow(),
            owner,
            utcnow().replace(year=2100),  # a lease that would never lapse
        )
    finally:
        await connection.close()
    return execution_id


async def _fetch_value(dsn: str, query: str, *args: object) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


async def _owner(dsn: str, execution_id: str) -> object:
    return await _fetch_value(dsn, "SELECT owner FROM executions WHERE id = $1", execution_id)


async def _both_registered(dsn: str) -> bool:
    return bool(await _fetch_value(dsn, "SELECT count(*) = 2 FROM workflow_replicas"))


async def test_a_replica_whose_session_vanished_has_its_executions_released(
    postgres: PrivatePostgres,
) -> None:
    a, b = Replica(postgres, "a"), Replica(postgres, "b")
    of_a = await _execution_owned_by(postgres.dsn, "a")
    of_b = await _execution_owned_by(postgres.dsn, "b")
    a.liveness.start()
    b.liveness.start()
    try:
        await assert_eventually(
            lambda: _both_registered(postgres.dsn), timeout=10, message="never registered"
        )
        # `a` dies as a killed process does: its loop stops, its socket closes.
        assert a.liveness._task is not None and a.liveness._connection is not None
        a.liveness._task.cancel()
        a.liveness._connection.terminate()

        async def released() -> bool:
            return await _owner(postgres.dsn, of_a) is None

        await assert_eventually(released, timeout=10, message="a's execution not released")
        assert b.released == [["a"]]
        assert await _owner(postgres.dsn, of_b) == "b"
        remaining = await _fetch_value(
            postgres.dsn, "SELECT string_agg(replica_id, ',') FROM workflow_replicas"
        )
        assert remaining == "b"
    finally:
        await a.liveness.stop()
        await b.liveness.stop()


async def test_a_postgres_restart_releases_nothing(postgres: PrivatePostgres) -> None:
    """Every session ends with the restart, and `b` is slower to reconnect than `a` (its
    loop is held back for a moment): `a`, back first, waits SETTLE_S before judging anyone,
    so `b` is not mistaken for dead."""
    a, b = Replica(postgres, "a"), Replica(postgres, "b")
    of_a = await _execution_owned_by(postgres.dsn, "a")
    of_b = await _execution_owned_by(postgres.dsn, "b")
    a.liveness.start()
    b.liveness.start()
    try:
        await assert_eventually(
            lambda: _both_registered(postgres.dsn), timeout=10, message="never registered"
        )
        assert b.liveness._task is not None
        b.liveness._task.cancel()  # held back: it reconnects only when started again
        await postgres.stop()
        await postgres.start()
        await assert_eventually(
            lambda: a.liveness._connections == 2, timeout=20, message="a never reconnected"
        )
        await asyncio.sleep(SETTLE_S / 2)  # b's reconnection comes late, within a's settling
        b.liveness.start()
        await assert_eventually(
            lambda: b.liveness._connections == 2, timeout=20, message="b never reconnected"
        )
        # Watch for longer than the settling: nobody is released.
        for _ in range(int(SETTLE_S * 2 / 0.1)):
            await asyncio.sleep(0.1)
        assert a.released == [] and b.released == []
        assert await _owner(postgres.dsn, of_a) == "a"
        assert await _owner(postgres.dsn, of_b) == "b"
    finally:
        await a.liveness.stop()
        await b.liveness.stop()
