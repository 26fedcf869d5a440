"""Following an execution: waiting for its end and reading its events as they are written.

An execution driven by this replica wakes its followers on every write (the engine's
notifier); one driven elsewhere is polled. The servicer turns what these yield into protobuf.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.errors import NotFound
from services.workflow import repository as repo
from services.workflow.events import EventNotifier
from services.workflow.models import EventRow, ExecutionRow
from services.workflow.status import FINAL_EXECUTION_STATUSES

# Followers of an execution another replica drives see its events within this. Cheaper than
# every replica consuming every event.
POLL_S = 0.25
# Followers of an execution this replica drives are woken by every write; the poll is only a
# safety net (a takeover moves the execution away), so an idle stream costs little.
LOCAL_POLL_S = 5.0


class _Engine(Protocol):
    """What following needs of the engine."""

    sessions: async_sessionmaker[AsyncSession]
    notifier: EventNotifier
    runners: Any  # execution id -> the runner driving it here (`row`, `finished`)


class Follower:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine

    async def wait_final(self, tenant: str, execution_id: str) -> ExecutionRow:
        """The execution's row once its status is final (NotFound when there is none)."""
        while True:
            runner = self.engine.runners.get(execution_id)
            if runner is not None and runner.row.tenant_id == tenant:
                # Driven here: its end is an in-memory event, no need to poll the database.
                await asyncio.shield(runner.finished)
                if runner.row.status in FINAL_EXECUTION_STATUSES:
                    # The runner applies each committed write to its row: a final status
                    # there was written (a runner that lost or crashed does not get here).
                    return runner.row
            async with self._wake_on_write(execution_id) as wake:
                async with self.engine.sessions() as session:
                    row = await repo.get_execution(session, tenant, execution_id)
                if row is None:
                    raise NotFound(f"execution {execution_id!r} not found")
                if row.status in FINAL_EXECUTION_STATUSES:
                    return row
                await wake

    async def events(self, tenant: str, execution_id: str, after: int) -> AsyncIterator[EventRow]:
        """The execution's events after seq `after`, as they are written, until it ends."""
        sessions = self.engine.sessions
        async with sessions() as session:
            if await repo.get_execution(session, tenant, execution_id) is None:
                raise NotFound(f"execution {execution_id!r} not found")
        after = max(0, after)
        while True:
            async with self._wake_on_write(execution_id) as wake:
                async with sessions() as session:
                    rows = await repo.events_after(session, execution_id, after)
                    status = None
                    if not rows:
                        row = await repo.get_execution(session, tenant, execution_id)
                        status = row.status if row else None
                for event in rows:
                    after = event.seq
                    yield event
                if rows:
                    continue
                if status is None:
                    return
                if status in FINAL_EXECUTION_STATUSES:
                    # The last batch (its events and the final status, one transaction) may
                    # have committed between the two reads above: read the events once more,
                    # or the stream would end without the execution's last events.
                    async with sessions() as session:
                        rows = await repo.events_after(session, execution_id, after)
                    for event in rows:
                        after = event.seq
                        yield event
                    return
                await wake

    @contextlib.asynccontextmanager
    async def _wake_on_write(self, execution_id: str) -> AsyncIterator[asyncio.Future[None]]:
        """A wake-up registered BEFORE the caller reads the database: a write (and its
        notification) landing between the read and the wait must not be missed, or the
        follower would sleep a whole poll interval with news waiting."""
        interval = LOCAL_POLL_S if execution_id in self.engine.runners else POLL_S
        wake = asyncio.ensure_future(self.engine.notifier.wait(execution_id, interval))
        await asyncio.sleep(0)  # let it register its waiter now
        try:
            yield wake
        finally:
            wake.cancel()
