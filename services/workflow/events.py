"""Local wake-ups for event followers (StreamEvents, WaitExecution).

Followers always read events from the database; a notification only tells them to look now
rather than at their next poll, which also covers events written by another replica.
"""

from __future__ import annotations

import asyncio
import contextlib


class EventNotifier:
    """Per-execution broadcast of "something new was written"."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def waiting(self) -> int:
        """Executions someone waits to hear about (0 once no follower waits)."""
        return len(self._waiters)

    def notify(self, execution_id: str) -> None:
        for waiter in self._waiters.pop(execution_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, execution_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """Return when notified for execution_id, or after timeout seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(execution_id, set()).add(waiter)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
            # that lands as the timeout fires, and followers wait in loops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter
        finally:
            waiters = self._waiters.get(execution_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    self._waiters.pop(execution_id, None)
