"""Batch runs: one execution per input, at most `concurrency` of them running at once.

A batch and its items are rows (models.BatchRow, BatchItemRow). The gateway replica that
accepts a batch drives it: it starts an execution per item with the item's idempotency key
(so a start repeated after a crash or a re-post finds the same execution), and starts the next
one when a running one ends (WaitExecution); up to `concurrency` starts are in flight at once.
It holds the batch by a lease it renews; a batch whose driver died is taken over by the next
replica that reads or re-posts it (`ensure_driven`). The batch id is derived from the tenant,
the workflow and the item keys: the same batch posted again is the same batch and starts
nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from heddle.v1 import workflow_pb2
from sqlalchemy import or_, select, update
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from libs.common import jsonutil
from libs.common.db import utcnow
from libs.common.errors import HeddleError, ResourceExhausted, Unavailable
from libs.common.periodic import periodic
from services.gateway.auth import GatewayDatabase
from services.gateway.clients import ServiceClients
from services.gateway.models import BatchItemRow, BatchRow

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("6f1c9a3e-7d2b-4f51-9a0e-b7c3d1e2f405")
FINAL = frozenset({"succeeded", "failed", "cancelled"})
LEASE_S = 30.0


def batch_id(tenant_id: str, workflow_id: str, keys: Sequence[str]) -> str:
    """The id of the batch of these item keys: the same keys, the same batch."""
    return str(uuid.uuid5(_NAMESPACE, "\n".join([tenant_id, workflow_id, *keys])))


class BatchDriver:
    """Drives the batches of this gateway replica (one task each)."""

    def __init__(self, db: GatewayDatabase, clients: ServiceClients) -> None:
        self.db = db
        self.clients = clients
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def ensure_driven(self, batch: BatchRow) -> None:
        """Drive the batch here unless it is finished or another replica holds it."""
        if batch.finished_at is not None or batch.id in self._tasks:
            return
        now = utcnow()
        async with self.db.transaction() as session:
            claimed = await session.execute(
                update(BatchRow)
                .where(
                    BatchRow.id == batch.id,
                    BatchRow.finished_at.is_(None),
                    or_(BatchRow.lease_until.is_(None), BatchRow.lease_until < now),
                )
                .values(lease_until=now + dt.timedelta(seconds=LEASE_S))
            )
        if getattr(claimed, "rowcount", 0) != 1:
            return
        task = asyncio.create_task(self._drive(batch), name=f"batch-{batch.id}")
        self._tasks[batch.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(batch.id, None))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drive(self, batch: BatchRow) -> None:
        renew = periodic("batch-lease", LEASE_S / 3, functools.partial(self._renew, batch.id))
        try:
            async with self.db.session() as session:
                items = (
                    await session.execute(
                        select(BatchItemRow)
                        .where(BatchItemRow.batch_id == batch.id)
                        .order_by(BatchItemRow.position)
                    )
                ).scalars()
                todo = [item for item in items if item.status not in FINAL | {"rejected"}]
            # Each item waits for a slot, then starts and follows its execution; the slots
            # are taken in the items' order (a semaphore's waiters are woken first in, first
            # out), and up to `concurrency` starts are in flight at once, not one at a time.
            slots = asyncio.Semaphore(batch.concurrency)
            async with asyncio.TaskGroup() as group:
                for item in todo:
                    group.create_task(self._run(batch, item, slots))
            async with self.db.transaction() as session:
                await session.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch.id)
                    .values(finished_at=utcnow(), lease_until=None)
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease runs out; the next read or re-post of the batch takes it over.
            log.exception("batch %s stopped", batch.id)
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew

    async def _renew(self, batch_id: str) -> None:
        with contextlib.suppress(HeddleError):
            async with self.db.transaction() as session:
                await session.execute(
                    update(BatchRow)
                    .where(BatchRow.id == batch_id)
                    .values(lease_until=utcnow() + dt.timedelta(seconds=LEASE_S))
                )

    async def _start(self, batch: BatchRow, item: BatchItemRow) -> bool:
        """Start (or find, by its key) the item's execution; False if it was refused."""
        request = workflow_pb2.StartExecutionRequest(
            workflow_id=batch.workflow_id,
            version=batch.version,
            inputs_json=jsonutil.dumps(item.inputs),
            idempotency_key=item.idempotency_key,
            tenant_id=batch.tenant_id,
            trigger=f"batch:{batch.id}",
        )
        try:
            # A tenant at its concurrent-executions quota, or a workflow service restarting,
            # is waited for; anything else (invalid inputs...) rejects the item.
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((ResourceExhausted, Unavailable)),
                wait=wait_exponential(multiplier=0.2, max=5),
                stop=stop_after_delay(600),
                reraise=True,
            ):
                with attempt:
                    reply = await self.clients.call(self.clients.workflow.StartExecution, request)
        except HeddleError as exc:
            await self._set(batch.id, item.position, status="rejected", error=str(exc)[:1000])
            return False
        item.execution_id = reply.execution_id
        await self._set(batch.id, item.position, execution_id=reply.execution_id, status="running")
        return True

    async def _run(self, batch: BatchRow, item: BatchItemRow, slots: asyncio.Semaphore) -> None:
        async with slots:
            if await self._start(batch, item):
                await self._follow(batch, item)

    async def _follow(self, batch: BatchRow, item: BatchItemRow) -> None:
        status = ""
        while status not in FINAL:
            try:
                execution = await self.clients.workflow.WaitExecution(
                    workflow_pb2.WaitExecutionRequest(
                        id=item.execution_id or "", tenant_id=batch.tenant_id, summary=True
                    ),
                    timeout=self.clients.settings.event_stream_max_s,
                )
                status = execution.status
            except Exception:  # a deadline or a restart of the workflow service
                await asyncio.sleep(1.0)
        await self._set(batch.id, item.position, status=status)

    async def _set(self, batch_id: str, position: int, **values: Any) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(BatchItemRow)
                .where(BatchItemRow.batch_id == batch_id, BatchItemRow.position == position)
                .values(**values)
            )
