"""Execution event streams for browsers: Server-Sent Events framing and WebSocket forwarding."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from libs.common import jsonutil
from libs.common.errors import DeadlineExceeded, HeddleError
from services.gateway.convert import event_json
from services.gateway.errors import error_body

log = logging.getLogger(__name__)

PING = b": ping\n\n"
# Browsers wait this long (ms) before reconnecting with Last-Event-ID.
RETRY = b"retry: 2000\n\n"


def sse_frame(event: dict[str, Any]) -> bytes:
    """One event as an SSE frame: `id: <seq>`, `event: <type>`, `data: <json>`."""
    return (
        f"id: {event['seq']}\nevent: {event['type']}\ndata: {jsonutil.dumps_str(event)}\n\n"
    ).encode()


async def with_heartbeat(
    events: AsyncGenerator[Any, None], interval_s: float
) -> AsyncIterator[Any | None]:
    """The items of events, with a None whenever none came for interval_s seconds."""
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=interval_s)
            if not done:
                yield None
                continue
            finished, pending = pending, None
            try:
                yield finished.result()
            except StopAsyncIteration:
                return
    finally:
        if pending is not None:
            # Its task closes the stream (and so cancels the gRPC call) as it unwinds; not
            # awaited, because the caller may itself be cancelled here.
            pending.cancel()
        else:
            await events.aclose()


async def sse_body(events: AsyncGenerator[Any, None], heartbeat_s: float) -> AsyncIterator[bytes]:
    """The body of an SSE response; an error after the headers went out becomes an `error`
    event (the client reconnects with Last-Event-ID)."""
    yield RETRY
    try:
        async for event in with_heartbeat(events, heartbeat_s):
            yield PING if event is None else sse_frame(event_json(event))
    except DeadlineExceeded:
        return  # the stream's own deadline: the client resumes where it was
    except HeddleError as error:
        log.warning("event stream ended with %s", error.code)
        data = jsonutil.dumps_str(error_body(**error.to_dict()))
        yield f"event: error\ndata: {data}\n\n".encode()


async def forward_to_websocket(websocket: WebSocket, events: AsyncGenerator[Any, None]) -> None:
    """Send each event as a JSON text frame until the stream ends or the client leaves."""

    async def forward() -> None:
        async for event in events:
            await websocket.send_text(jsonutil.dumps_str(event_json(event)))

    async def until_disconnect() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    sender = asyncio.ensure_future(forward())
    listener = asyncio.ensure_future(until_disconnect())
    try:
        await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, listener):
            task.cancel()
        await asyncio.gather(sender, listener, return_exceptions=True)
        await events.aclose()
    if listener.done() and not listener.cancelled():
        return  # the client went away
    error = sender.exception() if not sender.cancelled() else None
    if isinstance(error, DeadlineExceeded):
        await websocket.close(code=1000)
    elif isinstance(error, HeddleError):
        await websocket.send_text(jsonutil.dumps_str(error_body(**error.to_dict())))
        await websocket.close(code=ws_close_code(error))
    elif error is not None:
        raise error
    else:
        await websocket.close(code=1000)


def ws_close_code(error: HeddleError) -> int:
    """Application close codes mirror HTTP statuses: 4404, 4503..."""
    return 4000 + error.http_status if error.http_status < 1000 else 1011
