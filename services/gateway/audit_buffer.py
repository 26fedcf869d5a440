"""Audit records written in batches: the gateway answers a mutating request, appends its
record here, and one task writes every record gathered meanwhile in one INSERT.

Group commit without a timer: the writer starts as soon as a record arrives, so an idle
gateway writes each record at once (a few milliseconds after its answer); under load the
records that arrive while one INSERT is in flight go together in the next one, so the
gateway pays one transaction per round trip instead of one per request (that transaction
was more than half of a POST's time in the gateway).

What a shutdown and a crash can lose: close() writes every record still held (a clean
shutdown loses none). A crash (SIGKILL, power loss) loses the records held at that moment:
those of requests answered during the last INSERT's round trip. Before batching, a crash lost
the record of each request answered but not yet recorded, so the window grows from one
transaction per request to one shared round trip. While the database is down, records are
held (at most `max_held`, the oldest dropped beyond, counted and logged) and written when
it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

AUDIT_DROPPED = Counter(
    "heddle_audit_records_dropped",
    "Audit records dropped because the database stayed unreachable with max_held records held.",
)

Write = Callable[[list[dict[str, Any]]], Awaitable[None]]


class AuditBuffer:
    """add() a record (never blocks); flush() writes what is held now; close() at shutdown."""

    def __init__(self, write: Write, *, max_held: int = 100_000, retry_s: float = 1.0) -> None:
        self._write = write
        self._max_held = max_held
        self._retry_s = retry_s
        self._held: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def held(self) -> int:
        return len(self._held)

    def add(self, record: dict[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("the audit buffer is closed")
        self._held.append(record)
        excess = len(self._held) - self._max_held
        if excess > 0:
            del self._held[:excess]
            AUDIT_DROPPED.inc(excess)
            log.error("audit database unreachable: dropped %d oldest audit records", excess)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit-writer")
        self._wake.set()

    async def flush(self) -> None:
        """Write every record held now, in one INSERT; on failure they stay held."""
        async with self._lock:
            records, self._held = self._held, []
            if not records:
                return
            try:
                await self._write(records)
            except BaseException:
                self._held[:0] = records
                raise

    async def close(self) -> None:
        """Stop the writer and write what is left (logged when the database refuses)."""
        self._closed = True
        if self._task is not None:
            # Never cancel a write midway (its commit would be in doubt): wait for it.
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("could not write %d audit records at shutdown", len(self._held))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as error:
                log.warning("could not write %d audit records, retrying: %s", self.held, error)
                await asyncio.sleep(self._retry_s)
                self._wake.set()
