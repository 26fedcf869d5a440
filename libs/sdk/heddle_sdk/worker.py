"""`Worker`: a process that dials the cluster and runs attempts of its custom node types.

The worker connects out (gRPC, `WorkerService.Connect` of protos/heddle/v1/worker.proto), so
it works from a laptop or behind NAT: the cluster never connects in. It authenticates with an
API key of a tenant, registers its types with their schemas, then runs the attempts it is
sent, at most `max_concurrency` at once, heartbeating while connected.

- A broken connection is re-dialled with exponential backoff (with jitter); the attempts
  that were running are abandoned (the cluster re-sends them, with the same idempotency key,
  to a live worker).
- SIGTERM (or `drain()`): the worker tells the cluster it drains, takes no new attempt,
  finishes those in flight, then closes. A second SIGTERM/SIGINT stops at once.
- A refusal that reconnecting cannot fix (bad key, viewer key, an invalid or conflicting
  type) ends `run()` with a `WorkerError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.aio

from heddle_sdk import __version__
from heddle_sdk._proto.heddle.v1 import common_pb2, node_pb2, worker_pb2, worker_pb2_grpc
from heddle_sdk.context import Context
from heddle_sdk.errors import WorkerError
from heddle_sdk.nodes import NodeError, NodeType, collect_node_types

log = logging.getLogger("heddle_sdk.worker")

#: Refusals that another connection would get too.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_Key = tuple[str, str, int]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, else asyncio's own (None)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _target(server: str) -> tuple[str, bool]:
    """host:port and whether to use TLS, from "host:port", "grpc://..." or "grpcs://..."."""
    if "://" not in server:
        return server, False
    parts = urlsplit(server)
    tls = parts.scheme in ("grpcs", "https")
    port = parts.port or (443 if tls else 80)
    return f"{parts.hostname}:{port}", tls


@dataclass
class _Running:
    node_type: NodeType[..., Any]
    context: Context
    task: asyncio.Task[None]
    cancelled_by_server: bool = False


class _StreamSink:
    """A context's logs, progress and text, queued on the worker's stream (thread-safe)."""

    def __init__(self, worker: Worker, ref: node_pb2.AttemptRef) -> None:
        self._worker = worker
        self._ref = ref

    def log(self, level: str, message: str, fields: Mapping[str, Any]) -> None:
        record = worker_pb2.WorkerLog(
            attempt=self._ref,
            level=level,
            message=message,
            at=time.time(),
            fields_json=json.dumps(dict(fields), default=str).encode() if fields else b"",
        )
        self._worker._send_threadsafe(worker_pb2.WorkerMessage(log=record))

    def progress(self, fraction: float, message: str) -> None:
        progress = worker_pb2.AttemptProgress(attempt=self._ref, fraction=fraction, message=message)
        beat = worker_pb2.Heartbeat(progress=[progress])
        self._worker._send_threadsafe(worker_pb2.WorkerMessage(heartbeat=beat))

    def chunk(self, text: str) -> None:
        chunk = worker_pb2.TextChunk(attempt=self._ref, delta=text)
        self._worker._send_threadsafe(worker_pb2.WorkerMessage(chunk=chunk))


class Worker:
    """Serve node types to the cluster at `server` (the workflow service's worker port).

    `node_types` takes decorated functions, modules holding them, or lists of either."""

    def __init__(
        self,
        server: str,
        api_key: str,
        node_types: Iterable[Any],
        *,
        max_concurrency: int = 10,
        name: str | None = None,
        root_certificates: bytes | None = None,
        reconnect_initial_s: float = 0.2,
        reconnect_max_s: float = 15.0,
    ) -> None:
        self.types = {t.type: t for t in collect_node_types(list(node_types))}
        if not self.types:
            raise ValueError("a worker needs at least one @node_type")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.server = server
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.name = name or f"{socket.gethostname()}-{id(self) % 10000}"
        self.root_certificates = root_certificates
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        #: Set while a connection is registered; `worker_id` names it.
        self.registered = asyncio.Event()
        self.worker_id = ""
        self.tenant_id = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outgoing: asyncio.Queue[worker_pb2.WorkerMessage | None] | None = None
        self._running: dict[_Key, _Running] = {}
        self._slots = asyncio.Semaphore(max_concurrency)
        self._draining = asyncio.Event()
        self._stopped = asyncio.Event()
        self._threads = ThreadPoolExecutor(max_concurrency, thread_name_prefix="heddle-node")

    # ---- running --------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until drained (SIGTERM, SIGINT) or refused for good (WorkerError).

        On uvloop's event loop when it is installed (`pip install heddle-sdk[uvloop]`), as
        the cluster's services run: a busy worker spends markedly less CPU per attempt."""
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self.serve(handle_signals=True))

    async def serve(self, *, handle_signals: bool = False) -> None:
        """The worker's life in the current event loop: connect, serve, reconnect."""
        self._loop = asyncio.get_running_loop()
        # Plain-def node functions run here, one thread per slot (a new pool per serve()).
        self._threads = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="heddle-node")
        if handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._on_signal)
        delay = self.reconnect_initial_s
        try:
            while not self._draining.is_set() and not self._stopped.is_set():
                try:
                    await self._session()
                except grpc.aio.AioRpcError as error:
                    if error.code() in FATAL_CODES:
                        raise WorkerError(error.code().name, error.details() or "") from None
                    log.warning(
                        "connection to %s lost (%s: %s)",
                        self.server,
                        error.code().name,
                        error.details(),
                    )
                if self.worker_id:  # it was registered: the next outage starts afresh
                    delay = self.reconnect_initial_s
                self.worker_id = ""
                self.registered.clear()
                if self._draining.is_set() or self._stopped.is_set():
                    break
                await self._pause(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.reconnect_max_s)
        finally:
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(signum)
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def _pause(self, seconds: float) -> None:
        """Sleep before re-dialling; a drain or stop ends it early."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._draining, self._stopped)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def drain(self) -> None:
        """Take no new attempts, finish those in flight, then stop (thread-safe)."""
        if self._loop is None:
            self._draining.set()
        else:
            self._loop.call_soon_threadsafe(self._draining.set)

    def stop(self) -> None:
        """Stop at once: running attempts are abandoned (the cluster re-sends them)."""
        if self._loop is None:
            self._stopped.set()
        else:
            self._loop.call_soon_threadsafe(self._stopped.set)

    def _on_signal(self) -> None:
        if self._draining.is_set():
            log.warning("stopping now; %d attempts abandoned", len(self._running))
            self._stopped.set()
        else:
            log.info("draining: finishing %d attempts, taking no new ones", len(self._running))
            self._draining.set()

    # ---- one connection -------------------------------------------------------------------

    def _channel(self) -> grpc.aio.Channel:
        target, tls = _target(self.server)
        options = [
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        if tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
            return grpc.aio.secure_channel(target, credentials, options=options)
        return grpc.aio.insecure_channel(target, options=options)

    def _registration(self) -> worker_pb2.WorkerMessage:
        declared = []
        for node_type in self.types.values():
            declared.append(
                worker_pb2.CustomNodeType(
                    type=node_type.type,
                    title=node_type.title,
                    category=node_type.category,
                    description=node_type.description,
                    version=node_type.version,
                    params_schema_json=json.dumps(node_type.params_schema).encode(),
                    input_schema_json=(
                        json.dumps(node_type.input_schema).encode()
                        if node_type.input_schema is not None
                        else b""
                    ),
                    output_schema_json=json.dumps(node_type.output_schema).encode(),
                    input_ports=node_type.input_ports,
                    list_input_ports=node_type.list_input_ports,
                    output_ports=node_type.output_ports,
                )
            )
        register = worker_pb2.Register(
            worker_name=self.name,
            node_types=declared,
            max_concurrency=self.max_concurrency,
            sdk_version=__version__,
            batches=True,
        )
        return worker_pb2.WorkerMessage(register=register)

    async def _session(self) -> None:
        outgoing: asyncio.Queue[worker_pb2.WorkerMessage | None] = asyncio.Queue()
        async with self._channel() as channel:
            # The generated _grpc module has no stubs (protoc writes none for it).
            stub = worker_pb2_grpc.WorkerServiceStub(channel)  # type: ignore[no-untyped-call]
            # No request iterator: messages are written by one task, so that cancelling the
            # call never races an async generator that is still being iterated.
            call = stub.Connect(metadata=(("x-api-key", self.api_key),))
            helpers: list[asyncio.Task[None]] = []
            try:
                await call.write(self._registration())
                first = await call.read()
                if first is grpc.aio.EOF or first.WhichOneof("body") != "registered":
                    raise WorkerError("PROTOCOL", "the cluster did not answer the registration")
                registered = first.registered
                self.worker_id, self.tenant_id = registered.worker_id, registered.tenant_id
                self._outgoing = outgoing
                self.registered.set()
                log.info(
                    "worker %s registered %s with %s (tenant %s)",
                    self.worker_id,
                    ", ".join(self.types),
                    self.server,
                    self.tenant_id,
                )
                interval = registered.heartbeat_interval_s or 5.0
                writer = self._write(call, outgoing, batches=registered.batches)
                helpers.append(asyncio.create_task(writer))
                helpers.append(asyncio.create_task(self._heartbeats(interval)))
                helpers.append(asyncio.create_task(self._drain_when_asked(call)))
                helpers.append(asyncio.create_task(self._stop_when_asked(call)))
                while True:
                    message = await call.read()
                    if message is grpc.aio.EOF:
                        return
                    kind = message.WhichOneof("body")
                    if kind == "attempt":
                        self._start(message.attempt)
                    elif kind == "attempts":
                        for attempt in message.attempts.attempts:
                            self._start(attempt)
                    elif kind == "cancel":
                        self._cancel(message.cancel)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                return  # we cancelled the call (stop, or a drain the cluster did not close)
            finally:
                self._outgoing = None
                self._abandon()
                call.cancel()
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)

    @staticmethod
    async def _write(
        call: Any, outgoing: asyncio.Queue[worker_pb2.WorkerMessage | None], *, batches: bool
    ) -> None:
        """Write the queue in order; with `batches` (the cluster said so), the outcomes in a
        row that are queued at one moment go as one OutcomeBatch (never waiting for more)."""
        try:
            while True:
                message = await outgoing.get()
                if message is None:
                    await call.done_writing()
                    return
                if not batches or outgoing.empty():
                    await call.write(message)
                    continue
                ready: list[worker_pb2.WorkerMessage | None] = [message]
                while not outgoing.empty():
                    ready.append(outgoing.get_nowait())
                for out in _coalesced(ready):
                    if out is None:
                        await call.done_writing()
                        return
                    await call.write(out)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the call ended: the reader sees why

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._send(worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat()))

    async def _drain_when_asked(self, call: Any) -> None:
        await self._draining.wait()
        self._send(worker_pb2.WorkerMessage(drain=worker_pb2.Drain()))
        running = [entry.task for entry in self._running.values()]
        if running:
            await asyncio.wait(running)
        if self._outgoing is not None:
            self._outgoing.put_nowait(None)  # half-close: the cluster ends the stream
        await asyncio.sleep(5.0)
        call.cancel()  # it did not: do not hang

    async def _stop_when_asked(self, call: Any) -> None:
        await self._stopped.wait()
        call.cancel()

    def _send(self, message: worker_pb2.WorkerMessage) -> None:
        if self._outgoing is not None:
            self._outgoing.put_nowait(message)

    def _send_threadsafe(self, message: worker_pb2.WorkerMessage) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._send(message)
        else:
            loop.call_soon_threadsafe(self._send, message)

    # ---- attempts -------------------------------------------------------------------------

    def _start(self, attempt: worker_pb2.Attempt) -> None:
        key = (attempt.execution_id, attempt.node_id, attempt.attempt)
        if key in self._running:
            return  # a duplicate delivery: the first one answers
        node_type = self.types.get(attempt.node_type)
        ref = node_pb2.AttemptRef(
            execution_id=attempt.execution_id, node_id=attempt.node_id, attempt=attempt.attempt
        )
        started = time.time()
        if node_type is None or self._draining.is_set():
            reason = (
                f"worker {self.name} is draining"
                if node_type is not None
                else f"worker {self.name} does not serve node type {attempt.node_type!r}"
            )
            self._send_outcome(ref, started, error=NodeError(reason, type="WorkerUnavailable"))
            return
        context = Context(
            execution_id=attempt.execution_id,
            workflow_id=attempt.workflow_id,
            node_id=attempt.node_id,
            node_type=attempt.node_type,
            attempt=attempt.attempt,
            idempotency_key=attempt.idempotency_key,
            tenant_id=attempt.tenant_id,
            traceparent=attempt.traceparent,
            timeout_s=attempt.timeout_s or None,
            secrets=_json_object(attempt.secrets_json),
            sink=_StreamSink(self, ref),
        )
        task = asyncio.create_task(self._run_attempt(key, ref, node_type, context, attempt))
        self._running[key] = _Running(node_type, context, task)

    async def _run_attempt(
        self,
        key: _Key,
        ref: node_pb2.AttemptRef,
        node_type: NodeType[..., Any],
        context: Context,
        attempt: worker_pb2.Attempt,
    ) -> None:
        try:
            async with self._slots:
                started = time.time()
                try:
                    params = _json_object(attempt.params_json)
                    inputs = _json_object(attempt.inputs_json)
                    invocation = node_type.invoke(params, inputs, context, executor=self._threads)
                    with _span(node_type.type, attempt):
                        if attempt.timeout_s > 0:
                            async with asyncio.timeout(attempt.timeout_s):
                                result = await invocation
                        else:
                            result = await invocation
                except TimeoutError:
                    context.cancel()
                    error = NodeError(
                        f"{node_type.type} timed out after {attempt.timeout_s:g} s",
                        type="Timeout",
                    )
                    self._send_outcome(ref, started, error=error)
                except NodeError as error:
                    self._send_outcome(ref, started, error=error)
                except asyncio.CancelledError:
                    context.cancel()
                    raise
                except Exception as error:
                    log.exception("%s failed", node_type.type)
                    failure = NodeError(
                        str(error) or type(error).__name__, type=type(error).__name__
                    )
                    self._send_outcome(ref, started, error=failure)
                else:
                    self._send_outcome(ref, started, output=result.output, ports=result.ports)
        except asyncio.CancelledError:
            pass  # cancelled by the cluster or abandoned with the stream: no outcome
        finally:
            self._running.pop(key, None)

    def _send_outcome(
        self,
        ref: node_pb2.AttemptRef,
        started: float,
        *,
        output: dict[str, Any] | None = None,
        ports: list[str] | None = None,
        error: NodeError | None = None,
    ) -> None:
        outcome = node_pb2.NodeOutcome(
            execution_id=ref.execution_id,
            node_id=ref.node_id,
            attempt=ref.attempt,
            started_at=started,
            finished_at=time.time(),
        )
        if error is not None:
            outcome.kind = node_pb2.NodeOutcome.FAILED
            outcome.error.CopyFrom(
                common_pb2.ErrorInfo(
                    type=error.type,
                    message=error.message,
                    retryable=error.retryable,
                    details_json=(
                        json.dumps(error.details, default=str).encode()
                        if error.details is not None
                        else b""
                    ),
                )
            )
        else:
            outcome.kind = node_pb2.NodeOutcome.SUCCEEDED
            outcome.output_json = json.dumps(output if output is not None else {}).encode()
            if ports is None:
                outcome.all_ports = True
            else:
                outcome.active_ports.extend(ports)
        self._send(worker_pb2.WorkerMessage(outcome=worker_pb2.WorkerOutcome(outcome=outcome)))

    def _cancel(self, ref: node_pb2.AttemptRef) -> None:
        entry = self._running.get((ref.execution_id, ref.node_id, ref.attempt))
        if entry is not None:
            entry.cancelled_by_server = True
            entry.context.cancel()
            entry.task.cancel()

    def _abandon(self) -> None:
        for entry in list(self._running.values()):
            entry.context.cancel()
            entry.task.cancel()

    @property
    def in_flight(self) -> int:
        """Attempts running (or waiting for a slot) now."""
        return len(self._running)


#: Most outcomes in one OutcomeBatch.
OUTCOME_BATCH = 128


def _coalesced(
    messages: list[worker_pb2.WorkerMessage | None],
) -> list[worker_pb2.WorkerMessage | None]:
    """The messages in order, each run of outcomes as OutcomeBatch messages."""
    out: list[worker_pb2.WorkerMessage | None] = []
    run: list[worker_pb2.WorkerOutcome] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(worker_pb2.WorkerMessage(outcome=run[0]))
        elif run:
            out.append(worker_pb2.WorkerMessage(outcomes=worker_pb2.OutcomeBatch(outcomes=run)))
        run.clear()

    for message in messages:
        if message is not None and message.WhichOneof("body") == "outcome":
            run.append(message.outcome)
            if len(run) >= OUTCOME_BATCH:
                flush()
        else:
            flush()
            out.append(message)
    flush()
    return out


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import (
        TraceContextTextMapPropagator as _Propagator,
    )
except ImportError:  # tracing is optional: without OpenTelemetry, no span
    _trace = None  # type: ignore[assignment]


@contextlib.contextmanager
def _span(node_type: str, attempt: worker_pb2.Attempt) -> Any:
    """The worker's span, a child of the attempt's (when OpenTelemetry is installed and a
    tracer provider is configured in this process; otherwise nothing, at no cost)."""
    if _trace is None or isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
        yield
        return
    carrier = {"traceparent": attempt.traceparent} if attempt.traceparent else {}
    parent = _Propagator().extract(carrier)
    tracer = _trace.get_tracer("heddle_sdk.worker", __version__)
    with tracer.start_as_current_span(
        f"worker {node_type}",
        context=parent,
        kind=_trace.SpanKind.CONSUMER,
        attributes={
            "heddle.execution_id": attempt.execution_id,
            "heddle.node_id": attempt.node_id,
            "heddle.node_type": node_type,
            "heddle.attempt": attempt.attempt,
        },
    ):
        yield
