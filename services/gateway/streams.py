"""Execution event streams for browsers: Server-Sent Events framing and WebSocket forwarding."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar

from heddle.v1 import common_pb2, workflow_pb2
from starlette.websockets import WebSocket, WebSocketDisconnect

from libs.common import jsonutil
from libs.common.errors import DeadlineExceeded, HeddleError, NotFound
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


#: The frame an interactive stream adds when an agent's tool call waits for a person.
USER_INPUT_REQUIRED = "user_input_required"


def user_input_required(event: dict[str, Any]) -> dict[str, Any] | None:
    """The `user_input_required` frame (the seed's WebSocket message) that follows an
    event's JSON on the interactive streams (the chat's SSE, the WebSocket) when it is the
    `node.waiting` of an agent's tool call that needs approval; None for any other event.

    It names the call (tool, arguments, key: `execution/node/step.index`) and how to
    answer: `send_input` {execution_id, node_id, data: {action: approve | edit | reject,
    arguments?, message?}} on the WebSocket, POST /executions/{id}/input over HTTP. It carries
    the seq of its node.waiting: it is not an event of its own (not in the execution's
    history, no SSE `id:`, so a resumed stream's Last-Event-ID is the event's)."""
    if event.get("type") != "node.waiting":
        return None
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("approval"), dict):
        return None
    approval = data["approval"]
    return {
        "type": USER_INPUT_REQUIRED,
        "execution_id": event["execution_id"],
        "seq": event["seq"],
        "node_id": event["node_id"],
        "ts": event["ts"],
        "data": {
            "kind": "tool_approval",
            "tool": approval.get("tool"),
            "arguments": approval.get("arguments"),
            "key": approval.get("key"),
            "step": approval.get("step"),
            "index": approval.get("index"),
            "prompt": data.get("prompt"),
            "schema": data.get("schema"),
        },
        "trace_id": event.get("trace_id"),
    }


def interactive_frames(event: Any) -> list[dict[str, Any]]:
    """An Event as the frames of an interactive stream: its JSON, then its
    `user_input_required` frame when it has one."""
    out = event_json(event)
    extra = user_input_required(out)
    return [out] if extra is None else [out, extra]


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


async def sse_body(
    events: AsyncGenerator[Any, None], heartbeat_s: float, *, interactive: bool = False
) -> AsyncIterator[bytes]:
    """The body of an SSE response; an error after the headers went out becomes an `error`
    event (the client reconnects with Last-Event-ID). An interactive one (the chat's) also
    carries the `user_input_required` frames, as the WebSocket does."""
    yield RETRY
    try:
        async for event in with_heartbeat(events, heartbeat_s):
            if event is None:
                yield PING
            elif not interactive:
                yield sse_frame(event_json(event))
            else:
                for frame in interactive_frames(event):
                    yield (
                        sse_frame(frame)
                        if frame["type"] != USER_INPUT_REQUIRED
                        else f"event: {USER_INPUT_REQUIRED}\n"
                        f"data: {jsonutil.dumps_str(frame)}\n\n".encode()
                    )
    except DeadlineExceeded:
        return  # the stream's own deadline: the client resumes where it was
    except HeddleError as error:
        log.warning("event stream ended with %s", error.code)
        data = jsonutil.dumps_str(error_body(**error.to_dict()))
        yield f"event: error\ndata: {data}\n\n".encode()


def newly_listed(executions: Sequence[Any], seen: set[str]) -> tuple[list[Any], set[str]]:
    """The executions of a workflow watch's listing (its newest page) that the previous one
    did not hold, and the ids to compare the next listing with: only this listing's. An
    execution that left the newest page does not come back to it, so a watch holds at most a
    page of ids however many executions it saw (issue #17: a finished execution holds no
    memory; the set of every id seen grew for as long as a console tab watched)."""
    fresh = [execution for execution in executions if execution.id not in seen]
    return fresh, {execution.id for execution in executions}


def ws_close_code(error: HeddleError) -> int:
    """Application close codes mirror HTTP statuses: 4404, 4503..."""
    return 4000 + error.http_status if error.http_status < 1000 else 1011


# ---- the interactive WebSocket ----------------------------------------------------------------

#: How often a workflow subscription looks for the workflow's new executions.
WORKFLOW_POLL_S = 0.5
#: Bounds of one socket: subscriptions, and the size of a client frame.
MAX_SUBSCRIPTIONS = 100
MAX_FRAME_CHARS = 1_000_000
#: When a followed execution's stream ends the socket closes, but a client request in flight
#: (the `cancel` that ended it) is answered first, waiting at most this long: a request makes
#: at most two gRPC calls (authorize, act), each bounded by its own deadline (30 s by default),
#: so this only bounds a client that stopped reading.
CLOSE_GRACE_S = 60.0

#: (execution_id, action) -> the execution (an ExecutionOut), when the caller may do action
#: on it; raises NotFound (also for another tenant's execution) or PermissionDenied.
Authorize = Callable[[str, str], Awaitable[Any]]


class BadFrame(HeddleError):
    code = "invalid_argument"
    http_status = 422


class InteractiveSession:
    """One socket's conversation (the client messages are in the gateway README):

    - `subscribe` {execution_id, after?} or {workflow_id}: the execution's events (from
      `after`), or those of every execution of the workflow running now or started later;
    - `unsubscribe` {execution_id} or {workflow_id};
    - `send_input` {execution_id, node_id, data}: answer a waiting human_input node; or
      {agent_id, message, session_id?}: a chat message to an agent (its run is followed on
      this socket; the ack carries execution_id and session_id);
    - `execute_workflow` {workflow_id, inputs?, version?, idempotency_key?}: start an
      execution and follow it on this socket;
    - `cancel` {execution_id};
    - `ping`.

    Each is answered with `{"type": "ack", "request": <type>, "id": <the client's id>, ...}`
    or `{"type": "error", "request": ..., "id": ..., "error": {code, message, details}}`; a
    bad frame (malformed JSON, an unknown type, a missing field, another tenant's execution)
    gets an error frame and the socket stays open. Events are the SSE route's JSON, each with
    its `execution_id`; an agent's tool call waiting for approval is followed by a
    `user_input_required` frame (answered with `send_input`), as on the chat's SSE; when a
    followed execution's stream ends, `{"type": "unsubscribed", "execution_id", "reason":
    "ended"}`.
    """

    def __init__(
        self,
        websocket: WebSocket,
        clients: Any,
        guard: Any,
        caller: Any,
        authorize: Authorize,
    ) -> None:
        self.websocket = websocket
        self.clients = clients
        self.guard = guard
        self.caller = caller
        self.authorize = authorize
        self.executions: dict[str, asyncio.Task[None]] = {}
        self.workflows: dict[str, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()
        self._closing: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        #: Set while no client request is being handled.
        self._idle = asyncio.Event()
        self._idle.set()

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(jsonutil.dumps_str(frame))

    async def run(self, initial: str | None = None, after: int = 0) -> None:
        """Serve until the client leaves. With `initial` (the /ws/v1/executions/{id} route),
        that execution is followed from the start and the socket closes (1000) when its
        stream ends, as it always did: after answering a client request in flight then (the
        `cancel` that ended the execution gets its ack before the close)."""
        if initial is not None:
            self.executions[initial] = asyncio.ensure_future(
                self._follow(initial, after, close_at_end=True)
            )
        receiver = asyncio.ensure_future(self._receive())
        try:
            waiters: set[asyncio.Future[Any]] = {receiver, self._closing}
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if self._closing in done:
                if not self._idle.is_set() and not receiver.done():
                    # The stream ended under a request in flight (typically the `cancel` that
                    # ended the execution): its ack or error goes out before the close.
                    idle = asyncio.ensure_future(self._idle.wait())
                    await asyncio.wait(
                        {idle, receiver}, timeout=CLOSE_GRACE_S, return_when=asyncio.FIRST_COMPLETED
                    )
                    idle.cancel()
                with contextlib.suppress(Exception):
                    await self.websocket.close(code=self._closing.result())
        finally:
            receiver.cancel()
            tasks = [receiver, *self.executions.values(), *self.workflows.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if receiver.done() and not receiver.cancelled() and receiver.exception() is not None:
            error = receiver.exception()
            if not isinstance(error, WebSocketDisconnect):
                raise error  # type: ignore[misc]

    def _close(self, code: int) -> None:
        if not self._closing.done():
            self._closing.set_result(code)

    async def _receive(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", "replace")
            self._idle.clear()
            try:
                await self._handle(text or "")
            finally:
                self._idle.set()

    async def _handle(self, text: str) -> None:
        request: str | None = None
        frame_id: Any = None
        try:
            if len(text) > MAX_FRAME_CHARS:
                raise BadFrame(f"a frame is at most {MAX_FRAME_CHARS} characters")
            try:
                frame = jsonutil.loads(text)
            except ValueError as error:
                raise BadFrame(f"not JSON: {error}") from None
            if not isinstance(frame, dict):
                raise BadFrame("a frame is a JSON object with a `type`")
            frame_id = frame.get("id")
            request = frame.get("type") if isinstance(frame.get("type"), str) else None
            handler = self._handlers.get(request or "")
            if handler is None:
                raise BadFrame(
                    f"unknown message type {frame.get('type')!r}",
                    details={"types": sorted(self._handlers)},
                )
            extra = await handler(self, frame)
            await self.send({"type": "ack", "request": request, "id": frame_id, **extra})
        except HeddleError as error:
            await self.send(
                {"type": "error", "request": request, "id": frame_id, "error": error.to_dict()}
            )

    # ---- messages ---------------------------------------------------------------------------

    @staticmethod
    def _field(frame: dict[str, Any], name: str, kind: type = str) -> Any:
        value = frame.get(name)
        if not isinstance(value, kind) or (kind is str and not value):
            raise BadFrame(f"`{name}` is required ({kind.__name__})", details=[{"field": name}])
        return value

    def _room(self) -> None:
        if len(self.executions) + len(self.workflows) >= MAX_SUBSCRIPTIONS:
            raise BadFrame(f"at most {MAX_SUBSCRIPTIONS} subscriptions on one socket")

    async def _subscribe(self, frame: dict[str, Any]) -> dict[str, Any]:
        if "workflow_id" in frame and "execution_id" not in frame:
            workflow_id = self._field(frame, "workflow_id")
            await self._require_workflow(workflow_id, "read")
            if workflow_id not in self.workflows:
                self._room()
                self.workflows[workflow_id] = asyncio.ensure_future(self._watch(workflow_id))
            return {"workflow_id": workflow_id}
        execution_id = self._field(frame, "execution_id")
        after = frame.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise BadFrame("`after` is a sequence number >= 0", details=[{"field": "after"}])
        execution = await self.authorize(execution_id, "read")
        if execution.id not in self.executions:
            self._room()
            self.executions[execution.id] = asyncio.ensure_future(self._follow(execution.id, after))
        return {"execution_id": execution.id}

    async def _unsubscribe(self, frame: dict[str, Any]) -> dict[str, Any]:
        if "workflow_id" in frame and "execution_id" not in frame:
            workflow_id = self._field(frame, "workflow_id")
            task = self.workflows.pop(workflow_id, None)
            if task is None:
                raise BadFrame(f"not subscribed to workflow {workflow_id!r}")
            task.cancel()
            return {"workflow_id": workflow_id}
        execution_id = self._field(frame, "execution_id")
        follow = self.executions.pop(execution_id, None)
        if follow is None:
            raise BadFrame(f"not subscribed to execution {execution_id!r}")
        follow.cancel()
        return {"execution_id": execution_id}

    async def _send_input(self, frame: dict[str, Any]) -> dict[str, Any]:
        if "agent_id" in frame and "execution_id" not in frame:
            return await self._chat(frame)
        execution_id = self._field(frame, "execution_id")
        node_id = self._field(frame, "node_id")
        if "data" not in frame:
            raise BadFrame("`data` is required", details=[{"field": "data"}])
        execution = await self.authorize(execution_id, "execute")
        reply = await self.clients.call(
            self.clients.workflow.SubmitInput,
            workflow_pb2.SubmitInputRequest(
                id=execution.id,
                node_id=node_id,
                data_json=jsonutil.dumps(frame["data"]),
                tenant_id=self.caller.tenant_id,
            ),
        )
        return {"execution_id": execution.id, "status": reply.status}

    async def _chat(self, frame: dict[str, Any]) -> dict[str, Any]:
        # Imported here: the agents routes import this module (for the SSE body).
        from services.gateway.routes.agents import start_chat

        agent_id = self._field(frame, "agent_id")
        message = self._field(frame, "message")
        session_id = frame.get("session_id")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise BadFrame("`session_id` is a session's id", details=[{"field": "session_id"}])
        self._room()
        execution_id, session_id = await start_chat(
            self.clients, self.guard, self.caller, agent_id, message, session_id
        )
        if execution_id not in self.executions:
            self.executions[execution_id] = asyncio.ensure_future(self._follow(execution_id, 0))
        return {"execution_id": execution_id, "session_id": session_id}

    async def _execute_workflow(self, frame: dict[str, Any]) -> dict[str, Any]:
        workflow_id = self._field(frame, "workflow_id")
        inputs = frame.get("inputs", {})
        version = frame.get("version", 0)
        key = frame.get("idempotency_key", "")
        if not isinstance(inputs, dict):
            raise BadFrame("`inputs` is an object", details=[{"field": "inputs"}])
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 2**31:
            raise BadFrame("`version` is a version number", details=[{"field": "version"}])
        if not isinstance(key, str) or len(key) > 256:
            raise BadFrame("`idempotency_key` is a string", details=[{"field": "idempotency_key"}])
        await self._require_workflow(workflow_id, "execute")
        self._room()
        reply = await self.clients.call(
            self.clients.workflow.StartExecution,
            workflow_pb2.StartExecutionRequest(
                workflow_id=workflow_id,
                version=version,
                inputs_json=jsonutil.dumps(inputs),
                idempotency_key=key,
                tenant_id=self.caller.tenant_id,
                trigger="api",
            ),
        )
        if reply.execution_id not in self.executions:
            self.executions[reply.execution_id] = asyncio.ensure_future(
                self._follow(reply.execution_id, 0)
            )
        return {"execution_id": reply.execution_id, "status": reply.status}

    async def _cancel(self, frame: dict[str, Any]) -> dict[str, Any]:
        execution = await self.authorize(self._field(frame, "execution_id"), "execute")
        reply = await self.clients.call(
            self.clients.workflow.ControlExecution,
            workflow_pb2.ControlExecutionRequest(
                id=execution.id,
                action=workflow_pb2.ControlExecutionRequest.CANCEL,
                tenant_id=self.caller.tenant_id,
            ),
        )
        return {"execution_id": execution.id, "status": reply.status}

    async def _ping(self, frame: dict[str, Any]) -> dict[str, Any]:
        return {}

    _handlers: ClassVar[dict[str, Callable[..., Awaitable[dict[str, Any]]]]] = {
        "subscribe": _subscribe,
        "unsubscribe": _unsubscribe,
        "send_input": _send_input,
        "execute_workflow": _execute_workflow,
        "cancel": _cancel,
        "ping": _ping,
    }

    async def _require_workflow(self, workflow_id: str, action: str) -> None:
        try:
            uuid.UUID(workflow_id)
        except ValueError:
            raise NotFound(f"workflow {workflow_id!r} not found") from None
        await self.guard.require_workflow(self.caller, workflow_id, action)
        # Another tenant's workflow is not found (an admin passes the role check).
        await self.clients.call(
            self.clients.workflow.GetWorkflow,
            workflow_pb2.GetWorkflowRequest(id=workflow_id, tenant_id=self.caller.tenant_id),
        )

    # ---- forwarding ---------------------------------------------------------------------

    async def _follow(self, execution_id: str, after: int, close_at_end: bool = False) -> None:
        events = self.clients.stream_events(execution_id, after, self.caller.tenant_id)
        reason = "ended"
        try:
            async for event in events:
                for frame in interactive_frames(event):
                    await self.send(frame)
        except DeadlineExceeded:
            pass  # the stream's own deadline: the client resubscribes with `after`
        except HeddleError as error:
            await self.send(
                {"type": "error", "execution_id": execution_id, "error": error.to_dict()}
            )
            if close_at_end:
                self._close(ws_close_code(error))
                return
            reason = "error"
        finally:
            await events.aclose()
        if close_at_end:
            self._close(1000)
            return
        if self.executions.get(execution_id) is asyncio.current_task():
            del self.executions[execution_id]
        await self.send({"type": "unsubscribed", "execution_id": execution_id, "reason": reason})

    async def _watch(self, workflow_id: str) -> None:
        """Follow every execution of the workflow that runs now or starts later."""
        seen: set[str] = set()
        first = True
        while True:
            try:
                reply = await self._list_executions(workflow_id)
            except HeddleError as error:
                self.workflows.pop(workflow_id, None)
                await self.send(
                    {"type": "error", "workflow_id": workflow_id, "error": error.to_dict()}
                )
                await self.send(
                    {"type": "unsubscribed", "workflow_id": workflow_id, "reason": "error"}
                )
                return
            fresh, seen = newly_listed(reply.executions, seen)
            for execution in fresh:
                finished = execution.status in ("succeeded", "failed", "cancelled")
                if (first and finished) or execution.id in self.executions:
                    continue
                self.executions[execution.id] = asyncio.ensure_future(self._follow(execution.id, 0))
            first = False
            await asyncio.sleep(WORKFLOW_POLL_S)

    async def _list_executions(self, workflow_id: str) -> Any:
        return await self.clients.call(
            self.clients.workflow.ListExecutions,
            workflow_pb2.ListExecutionsRequest(
                page=common_pb2.PageRequest(page=1, page_size=100),
                workflow_id=workflow_id,
                tenant_id=self.caller.tenant_id,
            ),
        )
