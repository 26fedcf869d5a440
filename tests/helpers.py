"""Small helpers shared by the test suites."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def assert_eventually(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float = 5.0,  # noqa: ASYNC109 - a polling budget, not a cancellation scope
    interval: float = 0.02,
    message: str = "",
) -> None:
    """Poll predicate (sync or async) until it is truthy; fail after timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
