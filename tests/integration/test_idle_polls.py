"""The periodic questions a workflow replica asks while it has nothing to do cost little:
the request poll (several times a second) asks PostgreSQL one EXISTS on the writer's
connection before any ORM read, the recovery poll one statement there too, and a replica
whose workers serve nothing stops writing its (empty) worker presence after the first
round."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import create_engine, session_factory, utcnow
from libs.migrations import upgrade
from services.workflow import repository as repo
from services.workflow.models import ExecutionRequestRow, ExecutionRow
from services.workflow.pg_writer import BatchWriter
from services.workflow.worker_models import WorkerPresenceRow
from services.workflow.worker_presence import PresenceBoard
from services.workflow.workers import TypeKey, WorkerPool

pytestmark = pytest.mark.integration


@pytest.fixture
async def sessions(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(pg_url)
    await upgrade(engine)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def test_requests_pending_answers_for_the_owner_of_undone_requests(
    pg_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    writer = BatchWriter(pg_url)
    try:
        assert not await writer.requests_pending("replica-one")
        async with sessions.begin() as session:
            session.add(
                ExecutionRow(
                    id="e1",
                    workflow_id="w1",
                    workflow_version=1,
                    status="running",
                    owner="replica-one",
                )
            )
            await session.flush()
            session.add(ExecutionRequestRow(execution_id="e1", kind="control", payload={}))
        assert await writer.requests_pending("replica-one")
        assert not await writer.requests_pending("replica-two")
        async with sessions.begin() as session:
            await session.execute(update(ExecutionRequestRow).values(done=True))
        assert not await writer.requests_pending("replica-one")
    finally:
        await writer.close()


async def test_orphaned_executions_are_the_active_ones_no_replica_holds_oldest_first(
    pg_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    now = utcnow()
    lapsed, live = now - dt.timedelta(seconds=5), now + dt.timedelta(seconds=30)
    rows = [
        # id, status, owner, lease, created (seconds ago)
        ("held", "running", "r1", live, 50),
        ("lapsed", "running", "r1", lapsed, 10),
        ("ownerless", "pending", None, None, 30),
        ("paused-lapsed", "paused", "r2", lapsed, 20),
        ("finished", "succeeded", None, None, 40),
    ]
    async with sessions.begin() as session:
        for execution_id, status, owner, lease, age in rows:
            session.add(
                ExecutionRow(
                    id=execution_id,
                    workflow_id="w1",
                    workflow_version=1,
                    status=status,
                    owner=owner,
                    lease_expires_at=lease,
                    created_at=now - dt.timedelta(seconds=age),
                )
            )
    writer = BatchWriter(pg_url)
    try:
        found = await writer.orphaned_executions(repo.ACTIVE_STATUSES, now)
        assert found == ["ownerless", "paused-lapsed", "lapsed"]
        async with sessions() as session:
            assert list(await repo.orphaned_executions(session)) == found
        assert await writer.orphaned_executions(repo.ACTIVE_STATUSES, now, limit=1) == ["ownerless"]
    finally:
        await writer.close()


async def test_renew_leases_extends_and_returns_only_what_the_owner_holds(
    pg_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions.begin() as session:
        for execution_id, owner in [("a", "r1"), ("b", "r1"), ("c", "r2")]:
            session.add(
                ExecutionRow(
                    id=execution_id,
                    workflow_id="w1",
                    workflow_version=1,
                    status="running",
                    owner=owner,
                    lease_expires_at=utcnow(),
                )
            )
    until = utcnow() + dt.timedelta(seconds=60)
    writer = BatchWriter(pg_url)
    try:
        assert await writer.renew_leases("r1", ["a", "c", "gone"], until) == {"a"}
        assert await writer.renew_leases("r1", [], until) == set()
    finally:
        await writer.close()
    async with sessions() as session:
        leases = dict(
            (await session.execute(select(ExecutionRow.id, ExecutionRow.lease_expires_at))).all()
        )
    assert leases["a"] == until
    assert all(lease is not None and lease < until for lease in (leases["b"], leases["c"]))


class _Pool:
    """What the board reads of a WorkerPool."""

    def __init__(self) -> None:
        self.serving: dict[TypeKey, int] = {}

    def served(self) -> dict[TypeKey, int]:
        return dict(self.serving)

    def queued_keys(self) -> list[TypeKey]:
        return []

    def relay_queued(self) -> None:
        pass


class _CountingSessions:
    """A session factory that counts the transactions begun through it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.begun = 0

    def begin(self) -> Any:
        self.begun += 1
        return self._sessions.begin()

    def __call__(self) -> AsyncSession:
        return self._sessions()


async def _rows(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(WorkerPresenceRow)) or 0)


async def test_a_replica_serving_nothing_stops_writing_its_presence(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:  # left by an earlier run under this replica id
        session.add(WorkerPresenceRow(replica_id="r1", tenant_id="t", node_type="x", address="a"))
    pool = _Pool()
    counting = _CountingSessions(sessions)
    board = PresenceBoard(
        cast(async_sessionmaker[AsyncSession], counting),
        cast(WorkerPool, pool),
        replica_id="r1",
        address="a",
        refresh_s=1.0,
    )
    await board.refresh()  # the first round writes: the stale row goes
    assert (counting.begun, await _rows(sessions)) == (1, 0)
    await board.refresh()
    await board.refresh()
    assert counting.begun == 1
    pool.serving = {("t", "x"): 2}
    await board.refresh()
    await board.refresh()  # serving: every round refreshes its rows
    assert (counting.begun, await _rows(sessions)) == (3, 1)
    pool.serving = {}
    await board.refresh()  # withdrawn once
    await board.refresh()
    assert (counting.begun, await _rows(sessions)) == (4, 0)
    await board.stop()  # nothing left to withdraw
    assert counting.begun == 4
