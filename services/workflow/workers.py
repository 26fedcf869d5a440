"""Workers: external processes that serve a tenant's custom node types over one stream each.

A worker dials a workflow replica (WorkerService.Connect) and registers its types; this module
holds what the replica knows about the workers connected to it and routes attempts of custom
types to them:

- `custom_spec` turns a registered type into a `NodeTypeSpec` (checking its JSON Schemas), so
  validation and plans treat it exactly like a built-in type;
- `WorkerPool` keeps the connected workers, their free slots, and the attempts each runs;
  an attempt that no connected worker can take waits `queued` until one can, or until its
  schedule-to-start timeout fails it naming the type;
- an attempt of a type whose workers are connected to another replica is relayed there over
  that replica's `WorkerService.Relay` stream (which is a node replica's `Work` stream: the
  dispatcher's machinery carries it), found through the `worker_presence` table.

Custom types are namespaced ("acme.slugify") and built-in ones never are, so the dispatcher
tells them apart by a dot, without a lookup on the built-ins' hot path.

Failure semantics are the node replicas': an attempt whose worker vanished (stream broken,
heartbeats stopped) is handed back to the engine, which re-sends it with the same idempotency
key; a worker that is slow but heartbeating keeps its attempts (only the node's timeout_s
bounds them).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema
from heddle.v1 import common_pb2, node_pb2, worker_pb2
from prometheus_client import Gauge

from libs.common import jsonutil
from libs.common.errors import Conflict, InvalidArgument
from libs.common.expressions import ExpressionError, evaluate, render
from libs.common.node_types import DEFAULT_PORT, NodeTypeSpec
from libs.common.secrets import redact_outcome, redactable

log = logging.getLogger(__name__)

OutcomeHandler = Callable[[Sequence[node_pb2.NodeOutcome]], None]
FailureHandler = Callable[[Sequence[node_pb2.NodeTask], str], None]
AttemptKey = tuple[str, str, int]
TypeKey = tuple[str, str]  # (tenant_id, node_type)

#: The param every custom type accepts (the cluster's, never sent to the worker).
SCHEDULE_TO_START_PARAM = "schedule_to_start_timeout_s"
#: Extra seconds the cluster gives a worker past a node's timeout_s before it stops waiting.
TIMEOUT_GRACE_S = 5.0
#: Most attempts in one AttemptBatch (a node replica's work stream takes batches of 128).
ATTEMPT_BATCH = 128

QUEUED_ATTEMPTS = Gauge(
    "heddle_worker_queued_attempts",
    "Attempts of custom node types waiting for a worker that serves their type.",
    ["tenant", "node_type"],
)
CONNECTED_WORKERS = Gauge(
    "heddle_workers_connected", "Workers connected to this workflow replica.", ["tenant"]
)


def is_custom_type(node_type: str) -> bool:
    """Custom types are namespaced ("acme.slugify"); built-in types never contain a dot."""
    return "." in node_type


def _key(item: node_pb2.NodeTask | node_pb2.NodeOutcome | node_pb2.AttemptRef) -> AttemptKey:
    return (item.execution_id, item.node_id, item.attempt)


def _ref(key: AttemptKey) -> node_pb2.AttemptRef:
    return node_pb2.AttemptRef(execution_id=key[0], node_id=key[1], attempt=key[2])


# ---- registration -----------------------------------------------------------------------


def _schema(raw: bytes, type_name: str, what: str, default: dict[str, Any]) -> dict[str, Any]:
    if not raw:
        return dict(default)
    try:
        schema = jsonutil.loads(raw)
    except ValueError as error:
        raise InvalidArgument(f"node type {type_name!r}: {what} is not JSON: {error}") from error
    if not isinstance(schema, dict):
        raise InvalidArgument(f"node type {type_name!r}: {what} must be a JSON Schema object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        raise InvalidArgument(
            f"node type {type_name!r}: {what} is not a valid JSON Schema at {where}: "
            f"{error.message}"
        ) from error
    return schema


def type_version_number(version: str) -> int:
    """The integer a spec carries (and the cache key uses) for a worker's version string."""
    return int(version) if version.isdigit() and len(version) < 10 else zlib.crc32(version.encode())


@dataclass(frozen=True)
class CustomType:
    """A custom node type as registered: its spec and what the listing shows besides."""

    tenant_id: str
    spec: NodeTypeSpec
    version: str
    input_schema: dict[str, Any]
    digest: str

    def listing(self, connected: bool) -> dict[str, Any]:
        return {
            **self.spec.model_dump(mode="json"),
            "connected": connected,
            "worker_version": self.version,
            "input_schema": self.input_schema,
        }


def custom_spec(
    tenant_id: str, declared: worker_pb2.CustomNodeType, builtins: Iterable[str]
) -> CustomType:
    """Check a declared type and turn it into a spec; InvalidArgument names the type."""
    name = declared.type.strip()
    if not name:
        raise InvalidArgument("a node type without a name")
    if name in set(builtins):
        raise InvalidArgument(f"node type {name!r} is the name of a built-in node type")
    if not is_custom_type(name) or len(name) > 200 or name.startswith(".") or name.endswith("."):
        raise InvalidArgument(
            f"node type {name!r}: custom type names are namespaced, e.g. 'acme.slugify'"
        )
    params = _schema(
        declared.params_schema_json,
        name,
        "params_schema",
        {"type": "object", "properties": {}},
    )
    if params.get("type", "object") != "object":
        raise InvalidArgument(f"node type {name!r}: params_schema must describe an object")
    inputs = _schema(declared.input_schema_json, name, "input_schema", {})
    output = _schema(declared.output_schema_json, name, "output_schema", {"type": "object"})
    version = declared.version or "1"
    # The cluster's own param: how long an attempt may wait for a worker.
    properties = dict(params.get("properties") or {})
    properties[SCHEDULE_TO_START_PARAM] = {
        "type": "number",
        "exclusiveMinimum": 0,
        "description": "Seconds an attempt may wait for a connected worker serving this type "
        "before it fails (default: the cluster's setting).",
    }
    params = {**params, "properties": properties}
    spec = NodeTypeSpec(
        type=name,
        version=type_version_number(version),
        title=declared.title or name,
        description=declared.description,
        category=declared.category or "custom",
        params_schema=params,
        output_schema=output,
        input_ports=list(declared.input_ports) or ["in"],
        list_input_ports=list(declared.list_input_ports),
        output_ports=list(declared.output_ports) or [DEFAULT_PORT],
        source="worker",
        connected=False,
    )
    unknown = set(spec.list_input_ports) - set(spec.input_ports)
    if unknown:
        raise InvalidArgument(
            f"node type {name!r}: list_input_ports {sorted(unknown)} are not input ports"
        )
    canonical = jsonutil.dumps({"spec": spec.model_dump(mode="json"), "input": inputs}) or b""
    return CustomType(tenant_id, spec, version, inputs, hashlib.sha256(canonical).hexdigest())


def check_duplicates(types: Sequence[CustomType]) -> None:
    seen: set[str] = set()
    for custom in types:
        if custom.spec.type in seen:
            raise InvalidArgument(f"node type {custom.spec.type!r} is declared twice")
        seen.add(custom.spec.type)


def check_against_registered(custom: CustomType, registered: CustomType | None) -> None:
    """The same type and version must keep its schema (a new version may change it)."""
    if registered is None or registered.version != custom.version:
        return
    if registered.digest != custom.digest:
        raise Conflict(
            f"node type {custom.spec.type!r} version {custom.version!r} is already registered "
            "with a different schema: bump its version to change it"
        )


# ---- attempts ---------------------------------------------------------------------------


def _failed(task: node_pb2.NodeTask, type_: str, message: str, retryable: bool = False) -> Any:
    now = time.time()
    return node_pb2.NodeOutcome(
        execution_id=task.execution_id,
        node_id=task.node_id,
        attempt=task.attempt,
        kind=node_pb2.NodeOutcome.FAILED,
        error=common_pb2.ErrorInfo(type=type_, message=message, retryable=retryable),
        started_at=now,
        finished_at=now,
    )


def _progress(task: node_pb2.NodeTask, data: dict[str, Any]) -> Any:
    return node_pb2.NodeOutcome(
        execution_id=task.execution_id,
        node_id=task.node_id,
        attempt=task.attempt,
        kind=node_pb2.NodeOutcome.PROGRESS,
        output_json=jsonutil.dumps(data),
    )


class _GateClosed(Exception):
    pass


def to_attempt(task: node_pb2.NodeTask, spec: NodeTypeSpec, version: str) -> worker_pb2.Attempt:
    """The worker's view of an attempt: the gate evaluated and the params rendered here, so a
    worker never evaluates expressions. Raises _GateClosed (skip) or ExpressionError."""
    context = jsonutil.loads(task.context_json) or {}
    if task.when and not evaluate(task.when, context):
        raise _GateClosed
    params = jsonutil.loads(task.params_json) or {}
    params.pop(SCHEDULE_TO_START_PARAM, None)
    rendered = render(params, context)
    default_port = spec.input_ports[0] if spec.input_ports else "in"
    inputs: dict[str, Any] = {port: [] for port in spec.list_input_ports}
    for live in task.inputs:
        port = live.target_port or default_port
        value = context.get(live.source)
        if port in spec.list_input_ports:
            inputs[port].append(value)
        else:
            inputs[port] = value
    secrets = context.get("secrets")
    return worker_pb2.Attempt(
        execution_id=task.execution_id,
        workflow_id=task.workflow_id,
        node_id=task.node_id,
        node_type=task.node_type,
        attempt=task.attempt,
        idempotency_key=task.idempotency_key,
        params_json=jsonutil.dumps(rendered),
        inputs_json=jsonutil.dumps(inputs),
        timeout_s=task.timeout_s,
        tenant_id=task.tenant_id,
        traceparent=task.traceparent,
        secrets_json=jsonutil.dumps(secrets) if isinstance(secrets, dict) else b"",
        type_version=version,
    )


def schedule_to_start_s(task: node_pb2.NodeTask, default_s: float) -> float:
    if SCHEDULE_TO_START_PARAM.encode() not in task.params_json:
        return default_s
    value = (jsonutil.loads(task.params_json) or {}).get(SCHEDULE_TO_START_PARAM)
    return float(value) if isinstance(value, int | float) and value > 0 else default_s


@dataclass(eq=False, slots=True)
class _Pending:
    """One attempt this replica holds for a worker: queued, or running on one."""

    task: node_pb2.NodeTask
    on_outcomes: OutcomeHandler
    on_failure: FailureHandler
    handle: _Handle | None
    queued_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    worker: WorkerConnection | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    #: Relayed here by another replica: never relayed on (no ping-pong on stale presence).
    local_only: bool = False

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _Handle(Protocol):
    """The dispatcher's DispatchHandle, as far as the pool uses it."""

    streamed: dict[AttemptKey, Any]


@dataclass(eq=False)
class WorkerConnection:
    """One connected worker: what it serves, its slots, and what it runs."""

    tenant_id: str
    name: str
    types: dict[str, CustomType]
    max_concurrency: int
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    outbox: asyncio.Queue[worker_pb2.ServerMessage | None] = field(default_factory=asyncio.Queue)
    running: dict[AttemptKey, _Pending] = field(default_factory=dict)
    draining: bool = False
    last_seen: float = field(default_factory=time.monotonic)
    closed: bool = False
    #: The worker takes AttemptBatch messages (Register.batches; an older SDK does not).
    batches: bool = False

    def free(self) -> int:
        return 0 if self.draining or self.closed else self.max_concurrency - len(self.running)

    def close(self) -> None:
        """End the stream (the servicer sees None and returns)."""
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)

    def ready(self, first: worker_pb2.ServerMessage) -> tuple[list[worker_pb2.ServerMessage], bool]:
        """`first` and whatever else is queued now, as the messages to write: for a batching
        worker the attempts in a row become one AttemptBatch (at most ATTEMPT_BATCH each),
        in order with the cancels between them. Never waits for more. Also says whether the
        stream is to end after them (the None of close())."""
        if not self.batches:
            return [first], False
        messages: list[worker_pb2.ServerMessage] = []
        attempts: list[worker_pb2.Attempt] = []

        def flush() -> None:
            if len(attempts) == 1:
                messages.append(worker_pb2.ServerMessage(attempt=attempts[0]))
            elif attempts:
                batch = worker_pb2.AttemptBatch(attempts=attempts)
                messages.append(worker_pb2.ServerMessage(attempts=batch))
            attempts.clear()

        message: worker_pb2.ServerMessage | None = first
        ended = False
        while message is not None:
            if message.WhichOneof("body") == "attempt":
                attempts.append(message.attempt)
                if len(attempts) >= ATTEMPT_BATCH:
                    flush()
            else:
                flush()
                messages.append(message)
            if self.outbox.empty():
                break
            message = self.outbox.get_nowait()
            ended = message is None
        flush()
        return messages, ended


class RemoteRoute(Protocol):
    """Where an attempt goes when this replica has no worker for its type (the relay)."""

    def lookup(self, key: TypeKey) -> str | None: ...

    def send(
        self,
        address: str,
        task: node_pb2.NodeTask,
        handle: Any,
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
    ) -> None: ...


class WorkerPool:
    """The workers connected to this replica, and the attempts of custom types it holds."""

    def __init__(
        self,
        *,
        schedule_to_start_s: float,
        heartbeat_timeout_s: float,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.schedule_to_start_s = schedule_to_start_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.connections: dict[str, WorkerConnection] = {}
        self._by_type: dict[TypeKey, list[WorkerConnection]] = {}
        self._queued: dict[TypeKey, deque[_Pending]] = {}
        self._attempts: dict[AttemptKey, _Pending] = {}
        self._turn = 0
        #: Called when the set of served types changes (presence is republished).
        self.on_change = on_change
        #: Set by the server: relays attempts to another replica's workers.
        self.remote: RemoteRoute | None = None
        self._watchdog: asyncio.Task[None] | None = None

    # ---- workers ------------------------------------------------------------------------

    def served(self) -> dict[TypeKey, int]:
        """Connected, not draining workers per (tenant, type)."""
        return {
            key: sum(1 for c in conns if not c.draining)
            for key, conns in self._by_type.items()
            if any(not c.draining for c in conns)
        }

    def serves(self, tenant_id: str, node_type: str) -> bool:
        return any(not c.draining for c in self._by_type.get((tenant_id, node_type), ()))

    def add(self, connection: WorkerConnection) -> None:
        self.connections[connection.worker_id] = connection
        for name in connection.types:
            self._by_type.setdefault((connection.tenant_id, name), []).append(connection)
        CONNECTED_WORKERS.labels(connection.tenant_id).inc()
        log.info(
            "worker connected",
            extra={
                "worker": connection.name,
                "worker_id": connection.worker_id,
                "tenant_id": connection.tenant_id,
                "node_types": sorted(connection.types),
            },
        )
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="worker-heartbeats")
        self._changed()
        for name in connection.types:
            self._drain_queue((connection.tenant_id, name))

    def remove(self, connection: WorkerConnection, reason: str) -> None:
        """The worker is gone: its attempts are handed back to be re-sent elsewhere."""
        if self.connections.pop(connection.worker_id, None) is None:
            return
        connection.close()
        CONNECTED_WORKERS.labels(connection.tenant_id).dec()
        for name in connection.types:
            conns = self._by_type.get((connection.tenant_id, name), [])
            if connection in conns:
                conns.remove(connection)
            if not conns:
                self._by_type.pop((connection.tenant_id, name), None)
        lost = list(connection.running.values())
        connection.running.clear()
        log.warning(
            "worker disconnected",
            extra={"worker": connection.name, "reason": reason, "attempts_lost": len(lost)},
        )
        message = f"NodeUnavailable: worker {connection.name!r} disconnected: {reason}"
        for pending in lost:
            self._forget(pending)
            pending.on_failure([pending.task], message)
        self._changed()

    def drain(self, connection: WorkerConnection) -> None:
        """The worker takes no new attempts (SIGTERM); those it runs finish."""
        connection.draining = True
        log.info("worker draining", extra={"worker": connection.name})
        self._changed()

    def seen(self, connection: WorkerConnection) -> None:
        connection.last_seen = time.monotonic()

    async def _watch(self) -> None:
        interval = max(0.05, self.heartbeat_timeout_s / 4)
        while self.connections:
            before = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - before > 2 * interval:
                # This replica's loop stalled: the heartbeats may be waiting unread in its
                # sockets. Judge nobody on this round; count silence from now.
                for connection in self.connections.values():
                    connection.last_seen = max(connection.last_seen, now - interval)
                continue
            for connection in list(self.connections.values()):
                silent = now - connection.last_seen
                if silent > self.heartbeat_timeout_s:
                    self.remove(connection, f"no heartbeat for {silent:.1f} s")

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ---- attempts -----------------------------------------------------------------------

    def dispatch(
        self,
        tasks: Sequence[node_pb2.NodeTask],
        handle: Any,
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
        *,
        relayed: bool = False,
    ) -> None:
        """Send attempts of custom types to a worker here, relay them to another replica's
        worker, or queue them until a worker can take them (`relayed`: they come from
        another replica, and stay here)."""
        served: dict[TypeKey, bool] = {}  # per wave: a wave is mostly of one type
        for task in tasks:
            key = (task.tenant_id, task.node_type)
            pending = _Pending(task, on_outcomes, on_failure, handle, local_only=relayed)
            here = served.get(key)
            if here is None:
                here = served[key] = self.serves(*key)
            if not relayed and not here and self.remote is not None:
                address = self.remote.lookup(key)
                if address is not None:
                    self.remote.send(address, task, handle, on_outcomes, on_failure)
                    continue
            self._attempts[_key(task)] = pending
            if handle is not None:
                handle.streamed[_key(task)] = self
            worker = self._pick(key)
            if worker is not None:
                self._start(worker, pending)
            else:
                self._enqueue(key, pending)

    def _pick(self, key: TypeKey) -> WorkerConnection | None:
        connections = self._by_type.get(key, ())
        if len(connections) == 1:  # the common case: one worker serves the type here
            return connections[0] if connections[0].free() > 0 else None
        candidates = [c for c in connections if c.free() > 0]
        if not candidates:
            return None
        most = max(c.free() for c in candidates)
        best = [c for c in candidates if c.free() == most]
        self._turn += 1
        return best[self._turn % len(best)]

    def _enqueue(self, key: TypeKey, pending: _Pending) -> None:
        pending.queued_at = time.monotonic()
        wait_s = schedule_to_start_s(pending.task, self.schedule_to_start_s)
        pending.timer = asyncio.get_running_loop().call_later(
            wait_s, self._schedule_to_start_expired, pending, wait_s
        )
        self._queued.setdefault(key, deque()).append(pending)
        QUEUED_ATTEMPTS.labels(*key).inc()
        reason = (
            f"no connected worker serving {pending.task.node_type!r} has a free slot"
            if self._by_type.get(key)
            else f"no worker serving {pending.task.node_type!r} is connected"
        )
        pending.on_outcomes([_progress(pending.task, {"queued": True, "reason": reason})])
        log.info(
            "attempt queued: no worker serves its type",
            extra={
                "execution_id": pending.task.execution_id,
                "node_id": pending.task.node_id,
                "node_type": pending.task.node_type,
            },
        )

    def _unqueue(self, pending: _Pending) -> bool:
        key = (pending.task.tenant_id, pending.task.node_type)
        queue = self._queued.get(key)
        if queue is None or pending not in queue:
            return False
        queue.remove(pending)
        if not queue:
            del self._queued[key]
        QUEUED_ATTEMPTS.labels(*key).dec()
        pending.stop_timer()
        return True

    def queued(self) -> dict[TypeKey, int]:
        return {key: len(queue) for key, queue in self._queued.items()}

    def queued_keys(self) -> list[TypeKey]:
        return list(self._queued)

    def _schedule_to_start_expired(self, pending: _Pending, wait_s: float) -> None:
        pending.timer = None
        if not self._unqueue(pending):
            return
        self._forget(pending)
        task = pending.task
        message = (
            f"no worker serving node type {task.node_type!r} took the attempt within its "
            f"schedule-to-start timeout ({wait_s:g} s): start a worker that registers it"
        )
        pending.on_outcomes([_failed(task, "ScheduleToStartTimeout", message)])

    def _drain_queue(self, key: TypeKey) -> None:
        queue = self._queued.get(key)
        while queue:
            worker = self._pick(key)
            if worker is None:
                return
            pending = queue[0]
            self._unqueue(pending)
            self._start(worker, pending)

    def relay_queued(self) -> None:
        """Queued attempts whose type is now served by another replica's workers go there."""
        if self.remote is None:
            return
        for key in self.queued_keys():
            if self.serves(*key):
                continue
            address = self.remote.lookup(key)
            if address is None:
                continue
            for pending in list(self._queued.get(key, ())):
                if pending.local_only:
                    continue
                self._unqueue(pending)
                self._forget(pending)
                self.remote.send(
                    address, pending.task, pending.handle, pending.on_outcomes, pending.on_failure
                )

    def _start(self, worker: WorkerConnection, pending: _Pending) -> None:
        task = pending.task
        custom = worker.types[task.node_type]
        try:
            attempt = to_attempt(task, custom.spec, custom.version)
        except _GateClosed:
            self._forget(pending)
            now = time.time()
            skipped = node_pb2.NodeOutcome(
                execution_id=task.execution_id,
                node_id=task.node_id,
                attempt=task.attempt,
                kind=node_pb2.NodeOutcome.SKIPPED,
                started_at=now,
                finished_at=now,
            )
            pending.on_outcomes([skipped])
            return
        except ExpressionError as error:
            self._forget(pending)
            pending.on_outcomes([_failed(task, "ExpressionError", error.message)])
            return
        if attempt.secrets_json:
            secrets = jsonutil.loads(attempt.secrets_json) or {}
            pending.secrets = redactable(list(secrets.values()))
        if pending.queued_at:
            pending.on_outcomes([_progress(task, {"queued": False})])  # the node runs again
        pending.worker = worker
        worker.running[_key(task)] = pending
        if task.timeout_s > 0:
            pending.timer = asyncio.get_running_loop().call_later(
                task.timeout_s + TIMEOUT_GRACE_S, self._timed_out, pending
            )
        worker.outbox.put_nowait(worker_pb2.ServerMessage(attempt=attempt))

    def _timed_out(self, pending: _Pending) -> None:
        pending.timer = None
        key = _key(pending.task)
        if self._attempts.get(key) is not pending:
            return
        self.cancel(key)
        message = f"node did not finish within timeout_s={pending.task.timeout_s:g}"
        pending.on_outcomes([_failed(pending.task, "Timeout", message, retryable=True)])

    def _forget(self, pending: _Pending) -> None:
        key = _key(pending.task)
        if self._attempts.get(key) is pending:
            del self._attempts[key]
        pending.stop_timer()
        if pending.handle is not None:
            pending.handle.streamed.pop(key, None)

    def cancel(self, key: AttemptKey) -> None:
        """Forget an attempt and tell its worker to stop it (DispatchHandle.cancel)."""
        pending = self._attempts.get(key)
        if pending is None:
            return
        self._forget(pending)
        if self._unqueue(pending):
            return
        worker = pending.worker
        if worker is not None and worker.running.pop(key, None) is not None:
            worker.outbox.put_nowait(worker_pb2.ServerMessage(cancel=_ref(key)))
            self._drain_types(worker)

    def _drain_types(self, worker: WorkerConnection) -> None:
        for name in worker.types:
            self._drain_queue((worker.tenant_id, name))

    # ---- what workers send --------------------------------------------------------------

    def outcome(self, worker: WorkerConnection, outcome: node_pb2.NodeOutcome) -> None:
        self.outcomes(worker, [outcome])

    def outcomes(self, worker: WorkerConnection, outcomes: Iterable[node_pb2.NodeOutcome]) -> None:
        """Apply what a worker reports (one WorkerOutcome or an OutcomeBatch): each attempt's
        end is applied once (a repeat, or one cancelled or timed out meanwhile, is dropped),
        with one handler call per dispatch, as a node replica's batch is delivered."""
        groups: dict[int, tuple[OutcomeHandler, list[node_pb2.NodeOutcome]]] = {}
        ended = False
        for outcome in outcomes:
            key = _key(outcome)
            if outcome.kind == node_pb2.NodeOutcome.PROGRESS:
                pending = worker.running.get(key)
                if pending is None or pending.secrets:
                    continue
            else:
                pending = worker.running.pop(key, None)
                if pending is None:
                    continue  # cancelled or timed out meanwhile: nobody waits for it
                ended = True
                self._forget(pending)
                if pending.logs:
                    logs = pending.logs + list(jsonutil.loads(outcome.logs_json) or [])
                    outcome.logs_json = jsonutil.dumps(logs)
                if pending.secrets:
                    outcome = redact_outcome(outcome, pending.secrets)
            group = groups.get(id(pending.on_outcomes))
            if group is None:
                groups[id(pending.on_outcomes)] = (pending.on_outcomes, [outcome])
            else:
                group[1].append(outcome)
        for handler, delivered in groups.values():
            handler(delivered)
        if ended:
            self._drain_types(worker)

    def log_record(self, worker: WorkerConnection, record: worker_pb2.WorkerLog) -> None:
        pending = worker.running.get(_key(record.attempt))
        if pending is None:
            return
        entry: dict[str, Any] = {
            "level": record.level or "info",
            "message": record.message,
            "ts": record.at or time.time(),
            "source": "worker",
            "worker": worker.name,
        }
        if record.fields_json:
            fields = jsonutil.loads(record.fields_json)
            if isinstance(fields, dict):
                entry["fields"] = fields
        pending.logs.append(entry)

    def chunk(self, worker: WorkerConnection, chunk: worker_pb2.TextChunk) -> None:
        key = _key(chunk.attempt)
        progress = node_pb2.NodeOutcome(
            execution_id=key[0],
            node_id=key[1],
            attempt=key[2],
            kind=node_pb2.NodeOutcome.PROGRESS,
            output_json=jsonutil.dumps({"delta": chunk.delta}),
        )
        self.outcome(worker, progress)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for connection in list(self.connections.values()):
            connection.close()
