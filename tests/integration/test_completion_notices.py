"""Cross-replica completion notices (services/workflow/completions.py) on PostgreSQL: a
follower waiting on one replica for an execution that another replica drives is woken by
the driver's notice, not by its poll."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from libs.common.db import create_engine, session_factory, utcnow
from libs.migrations import upgrade
from services.workflow import following
from services.workflow.completions import CHANNEL, CompletionNotices
from services.workflow.events import EventNotifier
from services.workflow.following import Follower
from services.workflow.pg_writer import BatchWriter

pytestmark = pytest.mark.integration


class _Replica:
    """What Follower needs of an engine: sessions, the notifier, the runners driven here."""

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        self.notifier = EventNotifier()
        self.runners: dict[str, Any] = {}


@pytest.fixture
async def database(pg_url: str) -> AsyncIterator[tuple[str, Any]]:
    engine = create_engine(pg_url)
    await upgrade(engine)
    try:
        yield pg_url, session_factory(engine)
    finally:
        await engine.dispose()


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _running_execution(dsn: str) -> str:
    execution_id = str(uuid.uuid4())
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO executions (id, tenant_id, workflow_id, workflow_version, status, "
            "depth, trigger, trace_id, trace_parent, created_at, owner, lease_expires_at, "
            "last_seq, crashes) VALUES ($1, 'default', 'w', 1, 'running', 0, 'api', '', '', "
            "$2, 'replica-a', $2, 0, 0)",
            execution_id,
            utcnow(),
        )
    finally:
        await connection.close()
    return execution_id


async def test_a_follower_on_another_replica_is_woken_by_the_end_notice(
    database: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, sessions = database
    # A poll this slow never answers within the test: only the notice can wake the follower.
    monkeypatch.setattr(following, "POLL_S", 3600.0)
    driver, follower = _Replica(sessions), _Replica(sessions)
    driver_notices = CompletionNotices(url, driver.notifier)
    follower_notices = CompletionNotices(url, follower.notifier)
    assert driver_notices.enabled and follower_notices.enabled
    driver_notices.start()
    follower_notices.start()
    try:
        await asyncio.wait_for(driver_notices.connected.wait(), 20)
        await asyncio.wait_for(follower_notices.connected.wait(), 20)
        execution_id = await _running_execution(_dsn(url))
        waiting = asyncio.create_task(Follower(follower).wait_final("default", execution_id))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # still running: the follower waits
        connection = await asyncpg.connect(_dsn(url))
        try:
            await connection.execute(
                "UPDATE executions SET status = 'succeeded', finished_at = $2 WHERE id = $1",
                execution_id,
                utcnow(),
            )
        finally:
            await connection.close()
        driver_notices.announce(execution_id)  # what Engine.runner_finished does
        row = await asyncio.wait_for(waiting, 30)
        assert row.id == execution_id and row.status == "succeeded"
    finally:
        await driver_notices.stop()
        await follower_notices.stop()


async def test_nothing_to_do_on_sqlite(sqlite_url: str) -> None:
    notices = CompletionNotices(sqlite_url, EventNotifier())
    assert not notices.enabled
    notices.start()
    notices.announce("anything")  # a no-op, not an error
    await notices.stop()


async def test_the_final_write_notifies_the_end_in_its_own_transaction(
    database: tuple[str, Any],
) -> None:
    """BatchWriter.write(notify=CHANNEL), the final write of an execution (Engine.persist):
    the end is announced by the transaction that writes it, and not through another
    replica's fence."""
    url, _ = database
    dsn = _dsn(url)
    fenced, written = await _running_execution(dsn), await _running_execution(dsn)
    listener = await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[3]))
    writer = BatchWriter(url)
    try:
        final: dict[str, Any] = {
            "execution_values": {"status": "succeeded", "finished_at": utcnow()},
            "nodes": [],
            "events": [],
            "trace_id": "",
            "tenant_id": "default",
            "workflow_id": "w",
            "notify": CHANNEL,
        }
        assert not await writer.write(execution_id=fenced, owner="replica-b", **final)
        assert await writer.write(execution_id=written, owner="replica-a", **final)
        # Notices of one session arrive in commit order: the fenced write's would be first.
        assert await asyncio.wait_for(heard.get(), 10) == written
        row = await listener.fetchrow("SELECT status FROM executions WHERE id = $1", written)
        assert row is not None and row["status"] == "succeeded"
    finally:
        await writer.close()
        await listener.close()
