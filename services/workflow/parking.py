"""Parked executions: waiting executions unloaded from memory.

An execution whose every node that can move is waiting for the world (an event, human input,
a delay or retry timer) needs nothing of its runner until that comes: its state is in the
database already (persist before act). The runner stops (ExecutionRunner.parked) and the
replica keeps only a `Parked` record: the tenant and, when a timer is armed, one TimerHandle
in the event loop's heap. No task, no core, no compiled definition per waiter.

The replica stays the execution's owner while it is parked (its lease is renewed with the
others in one statement): an event, input or control request reaches the owner as it does a
loaded execution (a peer's take-over is refused by the live lease and forwarded), so the
execution is never released and claimed at a moment when two replicas could both reload it.
`unpark` reloads it through the takeover path (claim_execution, which the owner passes, then
the persisted rows → a new runner whose Begin re-arms the timers from their persisted due
times); one reload at a time per execution, the callers of a reload in progress share it.
Should the owner die, its lease lapses and a peer's recovery takes the execution over from
the database like any other. A parked execution whose lease this replica lost is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from services.workflow.metrics import EXECUTIONS_PARKED

if TYPE_CHECKING:
    from services.workflow.runner import ExecutionRunner

log = logging.getLogger(__name__)

#: Reload an execution this replica owns from the database (None: it is no longer active).
Load = Callable[[str], Awaitable["ExecutionRunner | None"]]


class Parked:
    """What a replica keeps of a parked execution."""

    __slots__ = ("tenant_id", "timer")

    def __init__(self, tenant_id: str, timer: asyncio.TimerHandle | None) -> None:
        self.tenant_id = tenant_id
        self.timer = timer


class Parking:
    """The executions this replica owns and has unloaded; reloads them on demand."""

    def __init__(self, load: Load, *, reloads: int = 16) -> None:
        self._load = load
        self._parked: dict[str, Parked] = {}
        self._loading: dict[str, asyncio.Future[ExecutionRunner | None]] = {}
        #: Reloads at once (10,000 delays due together must not open 10,000 sessions).
        self._gate = asyncio.Semaphore(reloads)
        self._due: set[asyncio.Task[None]] = set()
        self._closed = False

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._parked or execution_id in self._loading

    def __len__(self) -> int:
        return len(self._parked)

    def held(self) -> dict[str, int]:
        """Its registries' sizes (Engine.held): parked, being reloaded, timers firing."""
        return {"parked": len(self._parked), "loading": len(self._loading), "due": len(self._due)}

    def ids(self) -> list[str]:
        return list(self._parked)

    def tenant_of(self, execution_id: str) -> str | None:
        parked = self._parked.get(execution_id)
        return parked.tenant_id if parked is not None else None

    def park(self, runner: ExecutionRunner) -> None:
        """Keep the record of a runner that stopped because its execution only waits."""
        if self._closed:
            return
        timer = None
        if runner.park_at is not None:
            timer = asyncio.get_running_loop().call_at(runner.park_at, self._timer_due, runner.id)
        previous = self._parked.pop(runner.id, None)
        if previous is not None and previous.timer is not None:
            previous.timer.cancel()
        else:
            EXECUTIONS_PARKED.inc()
        self._parked[runner.id] = Parked(runner.tenant_id, timer)

    def forget(self, execution_id: str) -> None:
        """Drop a parked execution this replica no longer owns."""
        parked = self._parked.pop(execution_id, None)
        if parked is not None:
            EXECUTIONS_PARKED.dec()
            if parked.timer is not None:
                parked.timer.cancel()

    async def unpark(self, execution_id: str) -> ExecutionRunner | None:
        """Reload a parked execution (once, however many callers ask at the same time)."""
        loading = self._loading.get(execution_id)
        if loading is not None:
            return await asyncio.shield(loading)
        if execution_id not in self._parked:
            return None
        self.forget(execution_id)
        future: asyncio.Future[ExecutionRunner | None] = asyncio.get_running_loop().create_future()
        self._loading[execution_id] = future
        try:
            async with self._gate:
                runner = await self._load(execution_id)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: a reload nobody else waited for logs nothing
            raise
        else:
            future.set_result(runner)
            return runner
        finally:
            del self._loading[execution_id]

    def _timer_due(self, execution_id: str) -> None:
        task = asyncio.create_task(self._reload_due(execution_id), name="parking-timer")
        self._due.add(task)
        task.add_done_callback(self._due.discard)

    async def _reload_due(self, execution_id: str) -> None:
        try:
            await self.unpark(execution_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease lapses (the record is gone) and recovery takes it from the database.
            log.exception(
                "reloading a parked execution failed", extra={"execution_id": execution_id}
            )

    async def close(self) -> None:
        self._closed = True
        for execution_id in list(self._parked):
            self.forget(execution_id)
        for task in list(self._due):
            task.cancel()
        await asyncio.gather(*self._due, return_exceptions=True)
