"""The one periodic background loop (`periodic(name, interval, fn)`), with logging and
metrics of its own: iterations, failures and duration, labelled by the loop's name."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from libs.common.metrics import PERIODIC_DURATION, PERIODIC_FAILURES, PERIODIC_ITERATIONS

log = logging.getLogger(__name__)

Interval = float | Callable[[], float]


async def run_periodic(
    name: str,
    interval: Interval,
    fn: Callable[[], Awaitable[Any]],
    *,
    immediately: bool = False,
    wake: asyncio.Event | None = None,
) -> None:
    """Call `fn` every `interval` seconds until cancelled (what it returns is ignored).

    `interval` is a number or a function giving the next wait (for jitter or a setting that
    changes). A failure is logged with its traceback and counted; the loop goes on.
    `immediately` calls `fn` once before the first wait; setting `wake` ends a wait early
    (it is cleared before `fn` runs, so a set during the run calls it again at once).

    A cancel that `fn` swallowed still stops the loop: on Python 3.11 `asyncio.wait_for`
    returns its result when the cancel arrives as the awaited work completes, and redis-py
    sends every command through it (socket_timeout), so a cancelled scheduler elector went
    on renewing its lease for good and whoever awaited it hung.
    """
    iterations = PERIODIC_ITERATIONS.labels(name)
    failures = PERIODIC_FAILURES.labels(name)
    duration = PERIODIC_DURATION.labels(name)
    first = immediately
    while True:
        if not first:
            await _wait(_seconds(interval), wake)
        first = False
        started = time.perf_counter()
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures.inc()
            log.exception("periodic task failed", extra={"loop": name})
        finally:
            iterations.inc()
            duration.observe(time.perf_counter() - started)
        if _cancel_requested():
            raise asyncio.CancelledError


def _cancel_requested() -> bool:
    """Whether someone cancelled the current task and nothing withdrew it (uncancel)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _wait(seconds: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(seconds)
        return
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that
    # arrives as the wake fires, and the loop would never stop.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
    wake.clear()


def _seconds(interval: Interval) -> float:
    return max(0.0, float(interval() if callable(interval) else interval))


def periodic(
    name: str,
    interval: Interval,
    fn: Callable[[], Awaitable[Any]],
    *,
    immediately: bool = False,
    wake: asyncio.Event | None = None,
) -> asyncio.Task[None]:
    """Start `run_periodic(name, interval, fn)` as a task named `name` (cancel it to stop)."""
    loop = run_periodic(name, interval, fn, immediately=immediately, wake=wake)
    return asyncio.create_task(loop, name=name)


async def cancel_tasks(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait for them; what they raise on the way out is not re-raised."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
