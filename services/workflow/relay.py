"""The outbox relay: publishes committed events to the broker, then clears their outbox rows.

Events are written in the same transaction as the state change that causes them, with an
outbox row naming the batch (models.OutboxRow: the execution and its range of sequence
numbers). Right after the commit the runner hands the same rows to the relay, which
publishes them with confirms (no read-back on the hot path) once they have lingered a few
milliseconds, together with whatever else committed meanwhile (one publish, socket write and
confirm for many batches: a chain's step commits two events, and a publish of two cost the
workflow replica as much as the rest of the step), and deletes the confirmed batches'
outbox rows in coalesced statements. The event rows are never rewritten. A sweep of the
outbox catches whatever a crash left behind: at start-up every row, then periodically those
older than a few seconds. A crash between publish and delete publishes an event twice,
which consumers tolerate (each carries its execution's sequence number).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Sequence
from typing import Any, cast

from heddle.v1 import events_pb2
from opentelemetry.context import Context
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.bus import EVENTS_EXCHANGE, EventBus, OutgoingMessage, publishing
from libs.common.db import utcnow
from libs.common.periodic import periodic
from libs.common.timeutil import to_timestamp
from libs.common.tracing import context_from_traceparent
from services.workflow import repository as repo
from services.workflow.metrics import EVENTS_PUBLISHED, OUTBOX_BACKLOG

log = logging.getLogger(__name__)

# How long a stopping relay tries to publish what it still holds (the sweep has the rest).
_DRAIN_TIMEOUT_S = 3.0


def event_to_proto(row: Any) -> events_pb2.Event:
    """An Event message from an EventRow or the dict the runner wrote."""
    get = row.get if isinstance(row, dict) else lambda key: getattr(row, key)
    when = cast(dt.datetime, get("ts"))
    ts = to_timestamp(when)
    return events_pb2.Event(
        execution_id=get("execution_id"),
        seq=get("seq"),
        type=get("type"),
        node_id=get("node_id") or "",
        ts=ts,
        data_json=jsonutil.dumps(get("data")),
        trace_id=get("trace_id") or "",
        workflow_id=get("workflow_id") or "",
        tenant_id=get("tenant_id") or "",
    )


class OutboxRelay:
    """Moves events from the outbox table to the broker."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        *,
        sweep_interval_s: float = 5.0,
        mark_interval_s: float = 0.5,
        batch_size: int = 500,
        max_in_flight: int = 2000,
        linger_s: float = 0.0,
    ) -> None:
        self._sessions = sessions
        self._db = sessions.kw["bind"]
        self._bus = bus
        self._sweep_interval_s = sweep_interval_s
        self._mark_interval_s = mark_interval_s
        self._first_sweep = True
        self._batch_size = batch_size
        # Events handed over but not confirmed yet, at most (a whole execution's batch is
        # never split, so one round may hold more): under a backlog the rest waits in the
        # queue, not as publishes and confirm futures in flight.
        self._max_in_flight = max_in_flight
        self._linger_s = linger_s
        # (trace root of the execution, its events)
        self._queue: asyncio.Queue[tuple[str, Sequence[Any]]] = asyncio.Queue()
        # (execution id, low seq, high seq) of the batches confirmed, outbox rows to delete.
        self._to_clear: list[tuple[str, int, int]] = []
        # What the publish loop took from the queue and has not published yet.
        self._round: list[tuple[str, Sequence[Any]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0

    def enqueue(self, events: Sequence[dict[str, Any]], trace_parent: str = "") -> None:
        """Hand over committed events of one execution, whose trace root is trace_parent."""
        if events:
            self._queue.put_nowait((trace_parent, events))
            OUTBOX_BACKLOG.inc(len(events))

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="outbox-publish"),
            periodic("outbox-mark", self._mark_interval_s, self._mark),
            periodic("outbox-sweep", self._sweep_interval_s, self._sweep_once, immediately=True),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._drain()
        with contextlib.suppress(Exception):
            await self._mark()

    async def _publish(self, groups: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Publish a round: every execution's events, each in order, in ONE publish_many
        (one write, one wait for all the confirms; a publish_many per execution cost as many
        writes, channel locks, timeouts and waits: with 20 clients running small executions
        that was a quarter of the workflow replica's CPU). What fails stays in the outbox
        for the sweep."""
        messages: list[OutgoingMessage] = []
        with contextlib.ExitStack() as spans:
            for trace_parent, events in groups:
                protos = [event_to_proto(event) for event in events]
                # One PRODUCER span per execution and round (not per event): the consumers'
                # spans join the execution's trace through its `traceparent` header. An
                # execution without a trace root gets a root span, not one under the span
                # of the execution before it in the round.
                parent = context_from_traceparent(trace_parent) or Context()
                trace_headers = spans.enter_context(
                    publishing(EVENTS_EXCHANGE, "workflow", parent, len(protos))
                )
                for proto in protos:
                    headers = {"execution_id": proto.execution_id, "seq": str(proto.seq)}
                    messages.append(
                        (proto.type, proto.SerializeToString(), headers | trace_headers)
                    )
            await self._bus.publish_many(EVENTS_EXCHANGE, messages)
        self.published += len(messages)
        EVENTS_PUBLISHED.inc(len(messages))

    async def _publish_batches(self, groups: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Publish batches handed over by the runner; their outbox rows are deleted next."""
        await self._publish(_by_execution(groups))
        self._to_clear.extend(_ranges(groups))

    async def _publish_loop(self) -> None:
        while True:
            groups = self._round = [await self._queue.get()]
            try:
                if self._linger_s > 0 and len(groups[0][1]) < self._max_in_flight:
                    await asyncio.sleep(self._linger_s)
                self._take_queued(groups, self._max_in_flight)
                await self._publish_batches(groups)
            except asyncio.CancelledError:
                raise  # the round stays for _drain
            except Exception:
                # Left in the outbox: the sweep will retry them.
                log.warning("publishing events failed; the sweep will retry", exc_info=True)
            finally:
                OUTBOX_BACKLOG.dec(sum(len(events) for _, events in groups))
            self._round = []

    def _take_queued(self, groups: list[tuple[str, Sequence[Any]]], limit: float) -> int:
        """Add what is queued to a round, up to `limit` events in it (a batch is never
        split); returns how many events it took from the queue."""
        taken = sum(len(events) for _, events in groups)
        queued = 0
        while taken < limit and not self._queue.empty():
            groups.append(self._queue.get_nowait())
            taken += len(groups[-1][1])
            queued += len(groups[-1][1])
        return queued

    async def _drain(self) -> None:
        """At stop: publish what lingered or waited in the queue (else it would wait for a
        sweep, another replica's, seconds later), for at most a few seconds."""
        groups, self._round = self._round, []
        OUTBOX_BACKLOG.dec(self._take_queued(groups, math.inf))
        if groups:
            async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                await self._publish_batches(groups)

    async def _mark(self) -> None:
        """Delete the outbox rows of the batches confirmed since the last call (one
        statement)."""
        ranges, self._to_clear = self._to_clear, []
        if not ranges:
            return
        try:
            async with self._db.begin() as connection:
                await repo.delete_outbox(connection, ranges)
        except Exception:
            self._to_clear.extend(ranges)
            raise

    async def sweep(self, older_than: dt.datetime | None) -> int:
        """Publish the events of outbox rows a crash left behind (committed before
        older_than when given), then delete those rows; returns how many events."""
        total = 0
        while True:
            async with self._sessions() as session:
                # PostgreSQL: the rows stay locked until this transaction deletes them; a
                # relay sweeping the same backlog skips them, and this relay's own deletes
                # of the same batches (the start-up sweep sees the batches in flight) wait.
                due = await repo.due_outbox(session, self._batch_size, older_than)
                if not due:
                    return total
                rows = await repo.outbox_events(session, due)
                roots = await repo.trace_parents(session, {row.execution_id for row in rows})
                if self._db.dialect.name != "postgresql":
                    # SQLite locks no rows; a read transaction held over the publish would
                    # fail to become the delete's write transaction once the writer wrote.
                    await session.commit()
                if rows:
                    await self._publish(
                        _by_execution([(roots.get(row.execution_id, ""), [row]) for row in rows])
                    )
                await repo.delete_outbox(await session.connection(), due)
                await session.commit()
            total += len(rows)
            if len(due) < self._batch_size:
                return total

    async def _sweep_once(self) -> None:
        # At start-up everything; later only what is older than an interval (the rest may be
        # on its way through the publish loop).
        older_than = (
            None if self._first_sweep else utcnow() - dt.timedelta(seconds=self._sweep_interval_s)
        )
        self._first_sweep = False
        swept = await self.sweep(older_than)
        if swept:
            log.info("relayed events left in the outbox", extra={"count": swept})


def _by_execution(groups: Sequence[tuple[str, Sequence[Any]]]) -> list[tuple[str, list[Any]]]:
    """Merge the groups of one execution (the runner hands over one batch at a time)."""
    merged: dict[str, tuple[str, list[Any]]] = {}
    for trace_parent, events in groups:
        for event in events:
            execution_id = event["execution_id"] if isinstance(event, dict) else event.execution_id
            merged.setdefault(execution_id, (trace_parent, []))[1].append(event)
    return list(merged.values())


def _ranges(groups: Sequence[tuple[str, Sequence[Any]]]) -> list[tuple[str, int, int]]:
    """(execution id, low seq, high seq) of each batch handed over: its outbox row's key and
    range (a batch is one execution's)."""
    ranges = []
    for _, events in groups:
        seqs = [event["seq"] if isinstance(event, dict) else event.seq for event in events]
        first = events[0]
        execution_id = first["execution_id"] if isinstance(first, dict) else first.execution_id
        ranges.append((execution_id, min(seqs), max(seqs)))
    return ranges
