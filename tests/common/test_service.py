"""The service builder: resources closed in reverse order, a failed start closing what it
opened, health SERVING only once the build is done, and the periodic loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from helpers import assert_eventually
from prometheus_client import REGISTRY

from libs.common.grpcutil import check_health
from libs.common.service import ServiceStack, periodic, start_service


def _sample(name: str, loop: str) -> float:
    return REGISTRY.get_sample_value(name, {"loop": loop}) or 0.0


async def test_stop_closes_in_reverse_order_of_opening() -> None:
    closed: list[str] = []

    async def close(what: str) -> None:
        closed.append(what)

    async def build(stack: ServiceStack) -> ServiceStack:
        for what in ("database", "bus", "server"):
            stack.callback(close, what)
        return stack

    stack = await start_service("test", build)
    assert closed == []
    await stack.aclose()
    await stack.aclose()  # a second stop does nothing
    assert closed == ["server", "bus", "database"]


async def test_a_failed_start_closes_what_it_opened_and_raises() -> None:
    closed: list[str] = []
    started: list[asyncio.Task[None]] = []

    async def close(what: str) -> None:
        closed.append(what)

    async def build(stack: ServiceStack) -> None:
        stack.callback(close, "database")
        started.append(stack.task(asyncio.Event().wait(), name="background"))
        raise OSError("port taken")

    with pytest.raises(OSError, match="port taken"):
        await start_service("test", build)
    assert closed == ["database"]
    assert started[0].cancelled()


async def test_a_port_taken_closes_the_stack_and_the_server_reports_serving_only_when_built() -> (
    None
):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    closed: list[str] = []

    async def close(what: str) -> None:
        closed.append(what)

    async def build_on_taken(stack: ServiceStack) -> None:
        stack.callback(close, "database")
        await stack.grpc_server(["x.Service"], lambda server: None, host="127.0.0.1", port=taken)

    try:
        with pytest.raises(OSError):
            await start_service("taken", build_on_taken)
    finally:
        squatter.close()
    assert closed == ["database"]

    health_during_build: list[bool] = []

    async def build(stack: ServiceStack) -> ServiceStack:
        server = await stack.grpc_server(
            ["x.Service"], lambda server: None, host="127.0.0.1", port=0
        )
        # Listening, but not SERVING until the whole build has returned.
        health_during_build.append(await check_health(f"127.0.0.1:{server.port}"))
        ports.append(server.port)
        return stack

    ports: list[int] = []
    stack = await start_service("fine", build)
    assert health_during_build == [False]
    address = f"127.0.0.1:{ports[0]}"
    assert await check_health(address)
    assert await check_health(address, service="x.Service")
    await stack.aclose()
    assert not await check_health(address, timeout=0.5)


async def test_periodic_runs_again_after_a_failure_and_counts_it() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")

    before_runs = _sample("heddle_periodic_iterations_total", "flaky-loop")
    before_failures = _sample("heddle_periodic_failures_total", "flaky-loop")
    task = periodic("flaky-loop", 0.001, flaky)
    try:
        await assert_eventually(lambda: calls >= 4)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert _sample("heddle_periodic_failures_total", "flaky-loop") - before_failures == 1
    assert _sample("heddle_periodic_iterations_total", "flaky-loop") - before_runs >= 4
    assert REGISTRY.get_sample_value(
        "heddle_periodic_duration_seconds_count", {"loop": "flaky-loop"}
    )


async def test_periodic_runs_immediately_when_asked_then_waits_its_interval() -> None:
    calls = 0

    async def sweep() -> int:
        nonlocal calls
        calls += 1
        return 0  # what fn returns is not a wait

    stack = ServiceStack("sweep")
    task = stack.periodic("sweep-loop", 3600, sweep, immediately=True)
    await assert_eventually(lambda: calls == 1)
    await asyncio.sleep(0.05)
    assert calls == 1  # the next run is an hour away
    await stack.aclose()
    assert task.cancelled()


async def test_periodic_wakes_early_when_its_event_is_set() -> None:
    calls = 0
    wake = asyncio.Event()

    async def scan() -> None:
        nonlocal calls
        calls += 1

    task = periodic("wake-loop", 3600, scan, wake=wake)
    try:
        await asyncio.sleep(0.05)
        assert calls == 0  # an hour to the first run
        wake.set()
        await assert_eventually(lambda: calls == 1)
        assert not wake.is_set()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_periodic_stops_on_a_cancel_that_its_function_swallowed() -> None:
    # Python 3.11's wait_for returns the result when the cancel comes as the work completes
    # (redis-py sends every command through it): the loop must stop all the same.
    calls = 0
    loop_task: asyncio.Task[None] | None = None

    async def send() -> int:
        assert loop_task is not None
        loop_task.cancel()  # the cancel arrives as the send completes
        return 1

    async def renew() -> None:
        nonlocal calls
        calls += 1
        # Swallowed here as wait_for does on 3.11 (on 3.12 it lets the cancel through).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(send(), 5)

    loop_task = periodic("swallowing-loop", 0.01, renew, immediately=True)
    done, _ = await asyncio.wait({loop_task}, timeout=2)
    assert loop_task in done, "the cancelled loop went on"
    assert loop_task.cancelled()
    assert calls == 1
