"""wait_event: matching events POSTed to /api/v1/events with the nodes waiting for them.

A wait_event node returns a WAITING outcome, as human_input does; the workflow service
persists it `waiting` (no worker slot, no task of its own) and publishes `node.waiting` with
the node's {"event": {"name", "correlation_key"}}. Two sides meet in two tables:

- the indexer here consumes those `node.waiting` events (durable queue `log.event_waits`) and
  writes an ``event_waiters`` row, then looks for an event that arrived first;
- POST /api/v1/events (the gateway calls LogService.SendEvent, served here by
  ``receive_event``) writes a ``received_events`` row (kept for a while), then looks for
  waiters.

Each side commits its row before it looks at the other's table, so whatever the timing one of
them sees the other (no lost wake-up). A delivery claims the waiter by deleting its row, so a
waiter is resumed once even when both sides find each other; an early event is claimed by
setting consumed_at, so it resumes one waiter. Resuming is SubmitInput, the path a human's
input takes: it reaches the replica driving the execution wherever it runs, and a node that
is no longer waiting (it timed out) refuses it. Everything is rows and broker messages: a
restart of any service loses no waiter and no event.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from heddle.v1 import events_pb2, workflow_pb2, workflow_pb2_grpc
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.bus import EVENTS_EXCHANGE, EventBus, Message, Subscription
from libs.common.db import utcnow
from libs.common.errors import FailedPrecondition, HeddleError, NotFound, from_rpc_error
from services.log.models import DEFAULT_TENANT, EventWaiterRow, ReceivedEventRow

log = logging.getLogger(__name__)

#: Resume one waiting node with data: SubmitInput; raises HeddleError.
Submit = Callable[[str, str, str, Any], Awaitable[None]]

_STALE = (FailedPrecondition, NotFound)  # the node or execution no longer waits


def grpc_submitter(stub: workflow_pb2_grpc.WorkflowServiceStub, deadline_s: float) -> Submit:
    """A Submit over the workflow service's SubmitInput RPC."""

    async def submit(tenant_id: str, execution_id: str, node_id: str, data: Any) -> None:
        try:
            await stub.SubmitInput(
                workflow_pb2.SubmitInputRequest(
                    id=execution_id,
                    node_id=node_id,
                    data_json=jsonutil.dumps(data),
                    tenant_id=tenant_id,
                ),
                timeout=deadline_s,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    return submit


async def _claim_waiter(session: AsyncSession, execution_id: str, node_id: str) -> bool:
    result = await session.execute(
        delete(EventWaiterRow).where(
            EventWaiterRow.execution_id == execution_id, EventWaiterRow.node_id == node_id
        )
    )
    return getattr(result, "rowcount", 0) == 1


async def _restore_waiter(
    sessions: async_sessionmaker[AsyncSession], waiter: dict[str, Any]
) -> None:
    """Put back a waiter whose delivery failed for a reason that may pass (a restart)."""
    async with sessions() as session:
        session.add(EventWaiterRow(**waiter))
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()


def _waiter_values(row: EventWaiterRow) -> dict[str, Any]:
    return {
        "execution_id": row.execution_id,
        "node_id": row.node_id,
        "tenant_id": row.tenant_id,
        "name": row.name,
        "correlation_key": row.correlation_key,
        "attempt": row.attempt,
        "created_at": row.created_at,
    }


async def receive_event(
    sessions: async_sessionmaker[AsyncSession],
    submit: Submit,
    *,
    event_id: str,
    tenant_id: str,
    name: str,
    correlation_key: str,
    data: Any,
    keep_s: float,
) -> tuple[list[dict[str, str]], ReceivedEventRow]:
    """Record an event, then resume every node waiting for it; (who was resumed, the row).

    An event nobody took is kept keep_s seconds for a node that starts waiting later.
    """
    now = utcnow()
    row = ReceivedEventRow(
        id=event_id,
        tenant_id=tenant_id,
        name=name,
        correlation_key=correlation_key,
        data=data,
        received_at=now,
        expires_at=now + dt.timedelta(seconds=keep_s),
        delivered_to=0,
    )
    async with sessions() as session, session.begin():
        session.add(row)
    async with sessions() as session:
        waiters = [
            _waiter_values(waiter)
            for waiter in (
                await session.execute(
                    select(EventWaiterRow)
                    .where(
                        EventWaiterRow.tenant_id == tenant_id,
                        EventWaiterRow.name == name,
                        EventWaiterRow.correlation_key == correlation_key,
                    )
                    .order_by(EventWaiterRow.created_at)
                )
            ).scalars()
        ]
    resumed: list[dict[str, str]] = []
    failure: HeddleError | None = None
    for waiter in waiters:
        async with sessions() as session, session.begin():
            if not await _claim_waiter(session, waiter["execution_id"], waiter["node_id"]):
                continue  # an early event, or another POST, got there first
        try:
            await submit(tenant_id, waiter["execution_id"], waiter["node_id"], data)
        except _STALE:
            continue
        except HeddleError as exc:
            await _restore_waiter(sessions, waiter)
            failure = exc
            continue
        resumed.append({"execution_id": waiter["execution_id"], "node_id": waiter["node_id"]})
    if resumed:
        async with sessions() as session, session.begin():
            await session.execute(
                update(ReceivedEventRow)
                .where(ReceivedEventRow.id == event_id)
                .values(consumed_at=utcnow(), delivered_to=len(resumed))
            )
        row.consumed_at, row.delivered_to = utcnow(), len(resumed)
    if failure is not None and not resumed:
        # Kept (unconsumed) for the waiters that could not be reached; the caller learns it.
        raise failure
    return resumed, row


async def node_started_waiting(
    sessions: async_sessionmaker[AsyncSession],
    submit: Submit,
    *,
    tenant_id: str,
    execution_id: str,
    node_id: str,
    attempt: int,
    name: str,
    correlation_key: str,
) -> bool:
    """Index a waiting node, then hand it an event that arrived first; whether one did."""
    waiter = {
        "execution_id": execution_id,
        "node_id": node_id,
        "tenant_id": tenant_id,
        "name": name,
        "correlation_key": correlation_key,
        "attempt": attempt,
        "created_at": utcnow(),
    }
    async with sessions() as session:
        session.add(EventWaiterRow(**waiter))
        try:
            await session.commit()
        except IntegrityError:  # the same node.waiting redelivered
            await session.rollback()
    while True:
        now = utcnow()
        async with sessions() as session, session.begin():
            early = (
                await session.execute(
                    select(ReceivedEventRow)
                    .where(
                        ReceivedEventRow.tenant_id == tenant_id,
                        ReceivedEventRow.name == name,
                        ReceivedEventRow.correlation_key == correlation_key,
                        ReceivedEventRow.consumed_at.is_(None),
                        ReceivedEventRow.expires_at > now,
                    )
                    .order_by(ReceivedEventRow.received_at)
                    .limit(1)
                )
            ).scalar_one_or_none()
            if early is None:
                return False
            taken = await session.execute(
                update(ReceivedEventRow)
                .where(ReceivedEventRow.id == early.id, ReceivedEventRow.consumed_at.is_(None))
                .values(consumed_at=now, delivered_to=1)
            )
            if getattr(taken, "rowcount", 0) != 1:
                continue  # another waiter took that one: look again
            if not await _claim_waiter(session, execution_id, node_id):
                # The waiter was resumed meanwhile by a fresh event: give this one back.
                await session.execute(
                    update(ReceivedEventRow)
                    .where(ReceivedEventRow.id == early.id)
                    .values(consumed_at=None, delivered_to=0)
                )
                return False
            data = early.data
            early_id = early.id
        try:
            await submit(tenant_id, execution_id, node_id, data)
        except _STALE:
            async with sessions() as session, session.begin():
                await session.execute(
                    update(ReceivedEventRow)
                    .where(ReceivedEventRow.id == early_id)
                    .values(consumed_at=None, delivered_to=0)
                )
            return False
        except HeddleError:
            async with sessions() as session, session.begin():
                await session.execute(
                    update(ReceivedEventRow)
                    .where(ReceivedEventRow.id == early_id)
                    .values(consumed_at=None, delivered_to=0)
                )
            await _restore_waiter(sessions, waiter)
            raise  # the broker redelivers node.waiting and this runs again
        return True


class EventWaitIndexer:
    """Consumes `node.waiting` of wait_event nodes into the waiter index."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        submit: Submit,
        *,
        queue: str = "log.event_waits",
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._submit = submit
        self._queue = queue
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._bus.subscribe(
            EVENTS_EXCHANGE, ["node.waiting"], self._on_waiting, queue=self._queue, prefetch=256
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None

    async def _on_waiting(self, message: Message) -> None:
        try:
            event = events_pb2.Event.FromString(message.body)
        except DecodeError:
            return
        waiting = jsonutil.loads(event.data_json) if event.data_json else None
        if not isinstance(waiting, dict):
            return
        wanted = waiting.get("event")
        if not isinstance(wanted, dict) or not isinstance(wanted.get("name"), str):
            return  # a human_input node, or another kind of wait
        await node_started_waiting(
            self._sessions,
            self._submit,
            tenant_id=event.tenant_id or DEFAULT_TENANT,
            execution_id=event.execution_id,
            node_id=event.node_id,
            attempt=int(waiting.get("attempt") or 1),
            name=wanted["name"],
            correlation_key=str(wanted.get("correlation_key") or ""),
        )
