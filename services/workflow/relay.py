"""The outbox relay: publishes committed events to the broker, then marks them published.

Events are written in the same transaction as the state change that causes them; the relay
publishes with confirms and only then flips `published`. A crash in between publishes some
events twice, which consumers tolerate (every event has its execution's sequence number).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from google.protobuf.timestamp_pb2 import Timestamp
from heddle.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.bus import EVENTS_EXCHANGE, EventBus
from services.workflow import repository as repo
from services.workflow.models import EventRow

log = logging.getLogger(__name__)


def event_to_proto(row: EventRow) -> events_pb2.Event:
    ts = Timestamp()
    ts.FromDatetime(row.ts)
    return events_pb2.Event(
        execution_id=row.execution_id,
        seq=row.seq,
        type=row.type,
        node_id=row.node_id or "",
        ts=ts,
        data_json=jsonutil.dumps(row.data),
        trace_id=row.trace_id,
        workflow_id=row.workflow_id,
        tenant_id=row.tenant_id,
    )


class OutboxRelay:
    """Moves unpublished events from the database to the broker."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        batch_size: int = 500,
        idle_poll_s: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def relay_once(self) -> int:
        """Publish one batch; returns how many events went out."""
        async with self._sessions() as session:
            rows = await repo.unpublished_events(session, self._batch_size)
        if not rows:
            return 0
        await asyncio.gather(
            *(
                self._bus.publish(
                    EVENTS_EXCHANGE,
                    row.type,
                    event_to_proto(row).SerializeToString(),
                    {"execution_id": row.execution_id, "seq": str(row.seq)},
                )
                for row in rows
            )
        )
        async with self._sessions() as session, session.begin():
            await repo.mark_published(session, [(row.execution_id, row.seq) for row in rows])
        self.published += len(rows)
        return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                while await self.relay_once() >= self._batch_size:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox relay failed; will retry", exc_info=True)
                await asyncio.sleep(0.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle_poll_s)
            self._wake.clear()
