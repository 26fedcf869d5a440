"""Clients of Heddle's HTTP API: `AsyncClient` (asyncio, on httpx) and `Client` (blocking:
the same AsyncClient, driven on a private event loop thread, so there is one implementation).

httpx's API over aiohttp's HTTP/1.1 (httpx-aiohttp's transport) unless a transport is given:
httpx's own transport (httpcore, anyio's streams, two writes a request) cost ~0.25 ms more
client CPU per request here (bench/README.md, "Run-and-wait and the gateway, 2026-12-07").

Every method maps to one route of /api/v1 and raises a typed `APIError` (with the API's
code, message and details) when the gateway refuses. `events()` follows an execution's
Server-Sent Events, resuming by sequence number (`?after=`) when the stream drops; `wait()`
follows them until the execution ends.

Without an API key, a client of a loopback gateway adopts the development key the embedded
stack (`heddle serve`, `make run`) offers to local callers, as the CLI and the console do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeAlias, TypeVar
from urllib.parse import urlsplit

import httpx
from httpx_aiohttp import HttpxAiohttpClient
from pydantic import BaseModel, ConfigDict, Field

from heddle_sdk import __version__
from heddle_sdk.errors import ConnectionFailed, ExecutionTimeout, api_error
from heddle_sdk.workflow import Workflow

DEFAULT_SERVER = "http://127.0.0.1:8080"
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
FINAL_EVENTS = frozenset({"execution.completed", "execution.failed", "execution.cancelled"})
Definition: TypeAlias = Workflow | Mapping[str, Any]
P = ParamSpec("P")
R = TypeVar("R")


class _Out(BaseModel):
    # Fields the API adds later pass through (model_extra), so an older SDK keeps working.
    model_config = ConfigDict(extra="allow")


class ErrorInfo(_Out):
    type: str = ""
    message: str = ""
    retryable: bool = False
    details: Any = None


class WorkflowInfo(_Out):
    id: str
    name: str
    version: int
    description: str = ""
    definition: dict[str, Any] | None = None


class ValidationIssue(_Out):
    code: str
    message: str
    node_id: str | None = None
    edge: int | None = None
    field: str | None = None
    severity: str = "error"


class ValidationReport(_Out):
    valid: bool
    issues: list[ValidationIssue] = Field(default_factory=list)


class ExecutionStarted(_Out):
    execution_id: str
    status: str
    created: bool = True


class NodeRun(_Out):
    node_id: str
    type: str
    status: str
    attempts: int = 0
    output: Any = None
    error: ErrorInfo | None = None


class Execution(_Out):
    id: str
    workflow_id: str
    status: str
    inputs: Any = None
    outputs: Any = None
    error: ErrorInfo | None = None
    last_seq: int = 0
    nodes: list[NodeRun] = Field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES

    def node(self, node_id: str) -> NodeRun:
        """One node's run; KeyError when the execution has no such node."""
        for run in self.nodes:
            if run.node_id == node_id:
                return run
        raise KeyError(node_id)


class Event(_Out):
    execution_id: str
    seq: int
    type: str
    node_id: str | None = None
    ts: str | None = None
    data: Any = None
    trace_id: str | None = None


class NodeTypeInfo(_Out):
    type: str
    title: str = ""
    description: str = ""
    category: str = ""
    params_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    input_ports: list[str] = Field(default_factory=list)
    output_ports: list[str] = Field(default_factory=list)


def _definition(definition: Definition) -> dict[str, Any]:
    return definition.to_dict() if isinstance(definition, Workflow) else dict(definition)


def _execute_body(
    inputs: Mapping[str, Any] | None, idempotency_key: str | None, version: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": dict(inputs or {})}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if version is not None:
        body["version"] = version
    return body


#: The longest wait the gateway's run-and-wait takes in one request.
RUN_WAIT_MAX_S = 300.0


def _run_params(timeout: float | None) -> dict[str, float]:
    return {"wait": min(timeout, RUN_WAIT_MAX_S) if timeout else 30.0}


def _parsed(method: str, path: str, response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = api_error(response.status_code, body, f"{method} {path}: HTTP {response.status_code}")
    retry_after = response.headers.get("retry-after")
    if retry_after is not None and hasattr(error, "retry_after"):
        with contextlib.suppress(ValueError):
            error.retry_after = float(retry_after)
    return _raise(error)


def _raise(error: Exception) -> Any:
    raise error


def _is_loopback(server: str) -> bool:
    host = urlsplit(server).hostname or ""
    return host in {"localhost", "127.0.0.1", "::1"}


@dataclass
class _SSEParser:
    """Server-Sent Events, line by line: complete events as (type, data) pairs."""

    event_type: str = "message"
    data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            if not self.data:
                self.event_type = "message"
                return None
            found = (self.event_type, "\n".join(self.data))
            self.event_type, self.data = "message", []
            return found
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event_type = value
        elif name == "data":
            self.data.append(value)
        return None


class _Base:
    def __init__(self, server: str | None, api_key: str | None) -> None:
        self.server = (server or os.environ.get("HEDDLE_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("HEDDLE_API_KEY")
        self._dev_key_asked = bool(self.api_key) or not _is_loopback(self.server)

    def _headers(self) -> dict[str, str]:
        headers = {"user-agent": f"heddle-sdk/{__version__}"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


class AsyncClient(_Base):
    """An asyncio client of one gateway. Use as `async with AsyncClient(...) as client:`."""

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(server, api_key)
        # An httpx.AsyncClient whose default transports (and proxies' from the environment)
        # are aiohttp's; a transport given here is used as it is.
        self.http: httpx.AsyncClient = HttpxAiohttpClient(
            base_url=self.server, headers=self._headers(), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path, **kwargs)
            if response.status_code == 401 and await self._adopt_dev_key():
                response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ConnectionFailed(f"cannot reach {self.server}: {error}") from error
        return response

    async def _adopt_dev_key(self) -> bool:
        if self._dev_key_asked:
            return False
        self._dev_key_asked = True
        try:
            offered = (await self.http.get("/console/config")).json().get("dev_api_key")
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        if not isinstance(offered, str) or not offered:
            return False
        self.api_key = offered
        self.http.headers["authorization"] = f"Bearer {offered}"
        return True

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The parsed JSON of a successful response (None when empty); APIError otherwise."""
        return _parsed(method, path, await self._send(method, path, **kwargs))

    # ---- workflows
    async def create_workflow(self, definition: Definition) -> WorkflowInfo:
        body = await self.request("POST", "/api/v1/workflows", json=_definition(definition))
        return WorkflowInfo.model_validate(body)

    async def update_workflow(self, workflow_id: str, definition: Definition) -> WorkflowInfo:
        """Save a new version."""
        path = f"/api/v1/workflows/{workflow_id}"
        return WorkflowInfo.model_validate(
            await self.request("PUT", path, json=_definition(definition))
        )

    async def get_workflow(self, workflow_id: str, version: int | None = None) -> WorkflowInfo:
        params = {"version": version} if version is not None else None
        body = await self.request("GET", f"/api/v1/workflows/{workflow_id}", params=params)
        return WorkflowInfo.model_validate(body)

    async def list_workflows(self) -> list[WorkflowInfo]:
        return [WorkflowInfo.model_validate(w) async for w in self._pages("/api/v1/workflows")]

    async def delete_workflow(self, workflow_id: str) -> None:
        await self.request("DELETE", f"/api/v1/workflows/{workflow_id}")

    async def validate(self, definition: Definition) -> ValidationReport:
        """Validate without saving: every problem, located."""
        path = "/api/v1/workflows/validate"
        body = await self.request("POST", path, json=_definition(definition))
        return ValidationReport.model_validate(body)

    async def _pages(self, path: str) -> AsyncIterator[dict[str, Any]]:
        page = 1
        while True:
            listing = await self.request("GET", path, params={"page": page, "page_size": 200})
            for item in listing["items"]:
                yield item
            if not listing["items"] or page * listing["page_size"] >= listing["total"]:
                return
            page += 1

    # ---- executions
    async def execute(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        version: int | None = None,
    ) -> ExecutionStarted:
        """Start an execution (202). The same idempotency key returns the same execution."""
        body = _execute_body(inputs, idempotency_key, version)
        path = f"/api/v1/workflows/{workflow_id}/execute"
        return ExecutionStarted.model_validate(await self.request("POST", path, json=body))

    async def run(
        self,
        workflow_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        version: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a budget for the whole wait
    ) -> Execution:
        """Execute and wait for the end: the finished execution (without per-node records
        when the gateway's run-and-wait answered; `get_execution` has them).

        Uses POST /workflows/{id}/run?wait= (one request for a short run); a run that
        outlasts that wait is followed by its events, and a gateway without the route gets
        execute + wait."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        body = _execute_body(inputs, idempotency_key, version)
        path = f"/api/v1/workflows/{workflow_id}/run"
        params = _run_params(timeout)
        response = await self._send(
            "POST", path, json=body, params=params, timeout=params["wait"] + 10.0
        )
        if response.status_code in (404, 405):
            await self.get_workflow(workflow_id)  # NotFound when the 404 was about it
            started = await self.execute(
                workflow_id, inputs, idempotency_key=idempotency_key, version=version
            )
        else:
            reply = _parsed("POST", path, response)
            if response.status_code == 200:
                return Execution.model_validate(reply)
            started = ExecutionStarted.model_validate(reply)
        left = None if deadline is None else max(deadline - loop.time(), 0.001)
        return await self.wait(started.execution_id, timeout=left)

    async def get_execution(self, execution_id: str) -> Execution:
        body = await self.request("GET", f"/api/v1/executions/{execution_id}")
        return Execution.model_validate(body)

    async def wait(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a budget for the whole wait
    ) -> Execution:
        """Follow the execution's events until it ends; ExecutionTimeout after timeout s."""
        try:
            async with asyncio.timeout(timeout):
                async for _ in self.events(execution_id):
                    pass
                return await self.get_execution(execution_id)
        except TimeoutError:
            raise ExecutionTimeout(
                f"execution {execution_id} did not end within {timeout} s"
            ) from None

    async def events(self, execution_id: str, *, after: int = 0) -> AsyncGenerator[Event, None]:
        """Every event after seq `after` until the execution ends; a dropped stream is
        reopened with ?after=<last seq>, so no event is missed or repeated."""
        path = f"/api/v1/executions/{execution_id}/events"
        last = after
        pause = 0.05
        while True:
            params = {"after": last} if last else {}
            try:
                async with self.http.stream("GET", path, params=params, timeout=None) as stream:
                    if stream.status_code == 401 and await self._adopt_dev_key():
                        continue
                    if not stream.is_success and stream.status_code != 204:
                        await stream.aread()
                        _parsed("GET", path, stream)
                    parser = _SSEParser()
                    async for line in stream.aiter_lines():
                        frame = parser.feed(line)
                        if frame is None or frame[0] == "error":
                            continue
                        event = Event.model_validate(json.loads(frame[1]))
                        if event.seq <= last:
                            continue
                        last = event.seq
                        yield event
                        if event.type in FINAL_EVENTS:
                            return
                        pause = 0.05
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass  # dropped: reopen after the last event seen
            execution = await self.get_execution(execution_id)
            if execution.done and execution.last_seq <= last:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def submit_input(
        self, execution_id: str, node_id: str, data: Mapping[str, Any]
    ) -> Execution:
        """Answer a waiting human_input node."""
        body = {"node_id": node_id, "data": dict(data)}
        path = f"/api/v1/executions/{execution_id}/input"
        return Execution.model_validate(await self.request("POST", path, json=body))

    async def cancel(self, execution_id: str) -> Execution:
        return await self._control(execution_id, "cancel")

    async def pause(self, execution_id: str) -> Execution:
        return await self._control(execution_id, "pause")

    async def resume(self, execution_id: str) -> Execution:
        return await self._control(execution_id, "resume")

    async def _control(self, execution_id: str, action: str) -> Execution:
        body = await self.request("POST", f"/api/v1/executions/{execution_id}/{action}")
        return Execution.model_validate(body)

    async def retry(self, execution_id: str) -> ExecutionStarted:
        """Re-run a failed execution, reusing the outputs of the nodes that succeeded."""
        body = await self.request("POST", f"/api/v1/executions/{execution_id}/retry")
        return ExecutionStarted.model_validate(body)

    # ---- catalog
    async def list_node_types(self) -> list[NodeTypeInfo]:
        body = await self.request("GET", "/api/v1/node-types")
        return [NodeTypeInfo.model_validate(t) for t in body["node_types"]]


class _LoopThread:
    """A private event loop in a daemon thread, where a blocking client's calls run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="heddle-client", daemon=True
        )
        self._thread.start()

    def call(self, work: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run `work` on the loop and wait for its result (TimeoutError after `timeout`: the
        work is cancelled on the loop first)."""
        if timeout is not None:
            work = asyncio.wait_for(work, timeout)
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _ThreadedTransport(httpx.AsyncBaseTransport):
    """A blocking httpx transport under the blocking client's AsyncClient: each request is
    sent in a worker thread, its body read there."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        def send() -> httpx.Response:
            request.read()
            response = self._transport.handle_request(request)
            response.read()
            return response

        sent = await asyncio.to_thread(send)
        return httpx.Response(sent.status_code, headers=sent.headers, content=sent.content)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._transport.close)


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], R]:
    """The blocking form of an AsyncClient method: the same call, run on the client's loop."""

    def blocking(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._loop.call(method(self.async_client, *args, **kwargs))

    blocking.__name__ = method.__name__
    blocking.__qualname__ = f"Client.{method.__name__}"
    blocking.__doc__ = method.__doc__
    return blocking


class Client:
    """A blocking client of one gateway, with the methods of `AsyncClient`: it drives an
    `AsyncClient` on a private event loop in a thread of its own, so both behave alike.

    Usable from any thread, including one whose own event loop runs (the calls block it)."""

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            transport = _ThreadedTransport(transport)
        self._loop = _LoopThread()

        async def make() -> AsyncClient:  # httpx's client belongs to the loop it is made on
            return AsyncClient(server, api_key, timeout=timeout, transport=transport)

        self.async_client = self._loop.call(make())

    @property
    def server(self) -> str:
        return self.async_client.server

    @property
    def api_key(self) -> str | None:
        return self.async_client.api_key

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying httpx client (of the private loop: its event hooks are async)."""
        return self.async_client.http

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.loop.is_closed():
            self._loop.call(self.async_client.close())
        self._loop.close()

    create_workflow = _blocking(AsyncClient.create_workflow)
    update_workflow = _blocking(AsyncClient.update_workflow)
    get_workflow = _blocking(AsyncClient.get_workflow)
    delete_workflow = _blocking(AsyncClient.delete_workflow)
    validate = _blocking(AsyncClient.validate)
    execute = _blocking(AsyncClient.execute)
    run = _blocking(AsyncClient.run)
    get_execution = _blocking(AsyncClient.get_execution)
    wait = _blocking(AsyncClient.wait)
    submit_input = _blocking(AsyncClient.submit_input)
    cancel = _blocking(AsyncClient.cancel)
    pause = _blocking(AsyncClient.pause)
    resume = _blocking(AsyncClient.resume)
    retry = _blocking(AsyncClient.retry)
    list_node_types = _blocking(AsyncClient.list_node_types)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The parsed JSON of a successful response (None when empty); APIError otherwise."""
        return self._loop.call(self.async_client.request(method, path, **kwargs))

    def list_workflows(self) -> list[WorkflowInfo]:
        return self._loop.call(self.async_client.list_workflows())

    def events(
        self, execution_id: str, *, after: int = 0, deadline: float | None = None
    ) -> Iterator[Event]:
        """As AsyncClient.events; `deadline` (time.monotonic()) raises ExecutionTimeout."""
        stream = self.async_client.events(execution_id, after=after)

        async def following() -> Event | None:
            return await anext(stream, None)

        try:
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ExecutionTimeout(f"execution {execution_id} did not end in time")
                try:
                    event = self._loop.call(following(), timeout=left)
                except TimeoutError:
                    raise ExecutionTimeout(
                        f"execution {execution_id} did not end in time"
                    ) from None
                if event is None:
                    return
                yield event
        finally:
            if not self._loop.loop.is_closed():
                self._loop.call(stream.aclose())
