"""Cross-replica completion notices: a follower on one replica of an execution that another
replica drives is woken when it ends, instead of finding out on its next poll.

The driving replica announces an ended execution with PostgreSQL NOTIFY on one channel
(after its final state committed: runner_finished runs after the last write); every replica
LISTENs on that channel on one connection of its own and wakes its local followers through
the engine's notifier. Only ends are announced (one notice per execution, not one per
write), so no replica pays for every other replica's steps. The notice is only a wake-up:
the follower reads the execution from the database as before, and its poll stays as the
safety net (a notice lost while the listening connection reconnects costs one poll
interval, never a wrong answer). On SQLite (one process) there is nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from services.workflow.events import EventNotifier

log = logging.getLogger(__name__)

CHANNEL = "heddle_execution_ended"
_RECONNECT_S = 1.0
_IDLE_CHECK_S = 5.0


def _dsn(database_url: str) -> str | None:
    url = make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class CompletionNotices:
    """announce(id) from the driving replica; the listener wakes `notifier` for ids
    announced by any replica (this one included, harmlessly)."""

    def __init__(self, database_url: str, notifier: EventNotifier) -> None:
        self._dsn = _dsn(database_url)
        self._notifier = notifier
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self._dsn is not None

    def start(self) -> None:
        if self._dsn is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="completion-notices")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def announce(self, execution_id: str) -> None:
        """Queue a notice that execution_id ended (sent in batches, never blocking)."""
        if self._task is None:
            return
        self._pending.append(execution_id)
        self._wake.set()

    def _received(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._notifier.notify(payload)

    async def _run(self) -> None:
        assert self._dsn is not None
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                await connection.add_listener(CHANNEL, self._received)
                self.connected.set()
                await self._send_loop(connection)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database restarting, a dropped connection
                log.warning("completion notices interrupted, reconnecting: %s", error)
            finally:
                self.connected.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close(timeout=2))
            await asyncio.sleep(_RECONNECT_S)

    async def _send_loop(self, connection: asyncpg.Connection) -> None:
        while True:
            # Woken by announce(), or every few seconds to notice a dropped connection.
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for in a loop can swallow
            # the cancel that stop() sends when it lands as the wait times out.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_IDLE_CHECK_S):
                    await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    # One round trip for every execution that ended meanwhile.
                    await connection.execute(
                        "SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id", CHANNEL, batch
                    )
                except BaseException:
                    # Sent again on the next connection (a notice is only a wake-up, but
                    # a follower need not wait for its poll because of a reconnect).
                    self._pending[:0] = batch
                    raise
            if connection.is_closed():
                raise ConnectionError("listening connection closed")
