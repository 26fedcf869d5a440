"""Fan-out of node attempts to the node replicas.

Each node replica gets one long-lived bidirectional `Work` stream: ready attempts go out as
messages (a wave spread round-robin over the replicas, many attempts per message), outcomes
and progress come back as they finish, cancellations go out as messages too. A chain's step
thus costs one message each way instead of a gRPC call (measured on this machine: ~0.18 ms
for a message round trip against ~0.42 ms for the cheapest unary call, before interceptors).
A node with `timeout_s` travels alone in a call of its own, so that its timeout is the call's
gRPC deadline. When a replica's stream or call fails, the attempts that had no outcome yet
are handed back to the engine, which re-dispatches them as new attempts (on another replica:
the failed one is benched for a moment, and gets no work while its channel cannot connect).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import grpc
from heddle.v1 import node_pb2, node_pb2_grpc, worker_pb2_grpc
from opentelemetry import context as otel_context

from libs.common.grpcutil import AUTH_METADATA_KEY, TlsFiles, create_channel
from libs.common.periodic import periodic
from services.workflow.metrics import DISPATCH_IN_FLIGHT
from services.workflow.workers import WorkerPool

log = logging.getLogger(__name__)

OutcomeHandler = Callable[[Sequence[node_pb2.NodeOutcome]], None]
FailureHandler = Callable[[Sequence[node_pb2.NodeTask], str], None]

_BENCH_S = 2.0
#: A dispatch of fewer attempts joins the message of the replica picked last; a wave of
#: this many or more is spread, a share of at least this many per replica.
_WAVE = 8
#: Node types that report progress while they run: they always travel on a stream.
STREAMING_TYPES = frozenset({"llm"})
#: Node types that journal their steps with acknowledged writes (WorkRequest.acks): they
#: travel on a work stream even with a timeout_s (its node-side timeout still holds).
JOURNALED_TYPES = frozenset({"agent", "loop"})


AttemptKey = tuple[str, str, int]


def _key(item: node_pb2.NodeTask | node_pb2.NodeOutcome) -> AttemptKey:
    return (item.execution_id, item.node_id, item.attempt)


class _Cancellable(Protocol):
    def cancel(self, key: AttemptKey) -> None: ...


@dataclass
class DispatchHandle:
    """The calls and stream entries carrying one dispatch; cancelling it cancels them (and
    the node attempts)."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Where each streamed attempt is (a work stream, or the worker pool): `.cancel(key)`.
    streamed: dict[AttemptKey, _Cancellable] = field(default_factory=dict)

    def active(self) -> bool:
        return bool(self.tasks or self.streamed)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        for key, stream in list(self.streamed.items()):
            stream.cancel(key)
        self.streamed.clear()

    def ack(self, key: AttemptKey, seq: int, accepted: bool) -> bool:
        """Tell the attempt that its journal write `seq` is committed (or refused); False
        when the attempt is not on a stream of this dispatch (any more)."""
        stream = self.streamed.get(key)
        ack = getattr(stream, "ack", None)
        if ack is None:
            return False
        ack(key, seq, accepted)
        return True


@dataclass(slots=True)
class _Entry:
    task: node_pb2.NodeTask
    handle: DispatchHandle
    on_outcomes: OutcomeHandler
    on_failure: FailureHandler
    timer: asyncio.TimerHandle


class _WorkStream:
    """The `Work` stream to one replica, opened on first use and again after it broke."""

    def __init__(self, replica: _Replica, metadata: tuple[tuple[str, str], ...]) -> None:
        self._replica = replica
        self._metadata = metadata
        self._call: grpc.aio.StreamStreamCall | None = None
        #: What the next message carries: everything sent, cancelled or acknowledged since
        #: the writer's last write, so the attempts of one loop turn (and those sent while a
        #: write is in flight) travel as one WorkRequest, one gRPC write.
        self._tasks: list[node_pb2.NodeTask] = []
        self._cancels: list[node_pb2.AttemptRef] = []
        self._acks: list[node_pb2.JournalAck] = []
        #: Resolved by the first addition to an empty message: the writer waits on it.
        self._wakeup: asyncio.Future[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.pending: dict[AttemptKey, _Entry] = {}

    @property
    def open(self) -> bool:
        """Whether the stream's call is open (not broken, not closed)."""
        return self._call is not None

    @property
    def unsent(self) -> bool:
        """Whether attempts wait for the writer: more sent now share their message."""
        return bool(self._tasks) and self._call is not None

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def send(
        self,
        tasks: list[node_pb2.NodeTask],
        handle: DispatchHandle,
        timeout_s: float,
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
    ) -> None:
        loop = asyncio.get_running_loop()
        for task in tasks:
            key = _key(task)
            timer = loop.call_later(timeout_s, self._expire, key, timeout_s)
            self.pending[key] = _Entry(task, handle, on_outcomes, on_failure, timer)
            handle.streamed[key] = self
        self._replica.in_flight += len(tasks)
        self._replica.calls += 1
        DISPATCH_IN_FLIGHT.inc(len(tasks))
        if self._call is None:
            self._open()
        self._tasks.extend(tasks)
        self._wake()

    def cancel(self, key: AttemptKey) -> None:
        """Forget an attempt and tell the replica to stop it."""
        if self._take(key) is not None and self._call is not None:
            execution_id, node_id, attempt = key
            ref = node_pb2.AttemptRef(execution_id=execution_id, node_id=node_id, attempt=attempt)
            self._cancels.append(ref)
            self._wake()

    def ack(self, key: AttemptKey, seq: int, accepted: bool) -> None:
        if key in self.pending and self._call is not None:
            execution_id, node_id, attempt = key
            ack = node_pb2.JournalAck(
                execution_id=execution_id,
                node_id=node_id,
                attempt=attempt,
                seq=seq,
                accepted=accepted,
            )
            self._acks.append(ack)
            self._wake()

    def _take(self, key: AttemptKey) -> _Entry | None:
        entry = self.pending.pop(key, None)
        if entry is not None:
            entry.timer.cancel()
            entry.handle.streamed.pop(key, None)
            self._replica.in_flight -= 1
            DISPATCH_IN_FLIGHT.dec()
        return entry

    def _expire(self, key: AttemptKey, timeout_s: float) -> None:
        entry = self.pending.get(key)
        if entry is not None:
            self.cancel(key)
            entry.on_failure([entry.task], f"DeadlineExceeded: no outcome within {timeout_s:g} s")

    def _open(self) -> None:
        # The stream outlives the execution that happened to open it: keep it out of that
        # execution's trace (each attempt carries its own traceparent).
        token = otel_context.attach(otel_context.Context())
        try:
            call = self._replica.stub.Work(metadata=self._metadata or None)
        finally:
            otel_context.detach(token)
        self._call = call
        # What was meant for the previous stream went with its attempts (failed over).
        self._tasks, self._cancels, self._acks = [], [], []
        self._workers = [
            asyncio.create_task(self._write(call)),
            asyncio.create_task(self._read(call)),
        ]

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not (self._tasks or self._cancels or self._acks):
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                    if self._call is not call:
                        return
                    if len(self.pending) > len(self._tasks):
                        # Other attempts are out on this stream (many executions): one more
                        # loop turn lets the steps their outcomes release join this message.
                        await asyncio.sleep(0)
                        if self._call is not call:
                            return
                request = node_pb2.WorkRequest(
                    tasks=self._tasks, cancel=self._cancels, acks=self._acks
                )
                self._tasks, self._cancels, self._acks = [], [], []
                self._replica.writes += 1
                await call.write(request)
        except Exception as error:  # whatever broke the stream, its attempts go elsewhere
            self._broken(call, f"write failed: {error!r}")

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        reason = "stream ended"
        try:
            async for response in call:
                self._deliver(response.outcomes)
                if response.unavailable:
                    self._unavailable(response.unavailable, response.unavailable_reason)
        except grpc.aio.AioRpcError as error:
            reason = error.code().name
        except Exception as error:  # never leave attempts waiting on a dead reader
            log.exception("node replica stream reader failed")
            reason = repr(error)
        self._broken(call, reason)

    def _deliver(self, outcomes: Sequence[node_pb2.NodeOutcome]) -> None:
        # One handler call per dispatch (several outcomes of a wave arrive together).
        groups: dict[int, tuple[OutcomeHandler, list[node_pb2.NodeOutcome]]] = {}
        for outcome in outcomes:
            key = _key(outcome)
            if outcome.kind == node_pb2.NodeOutcome.PROGRESS:
                entry = self.pending.get(key)
            else:
                entry = self._take(key)
            if entry is None:
                continue  # cancelled or expired meanwhile: nobody waits for it
            group = groups.get(id(entry.on_outcomes))
            if group is None:
                groups[id(entry.on_outcomes)] = (entry.on_outcomes, [outcome])
            else:
                group[1].append(outcome)
        for handler, delivered in groups.values():
            handler(delivered)

    def _unavailable(self, refs: Sequence[node_pb2.AttemptRef], reason: str) -> None:
        """The other end will send no outcome for these (a relayed attempt's worker left)."""
        for ref in refs:
            entry = self._take((ref.execution_id, ref.node_id, ref.attempt))
            if entry is not None:
                entry.on_failure([entry.task], reason or "NodeUnavailable: no outcome")

    def _broken(self, call: grpc.aio.StreamStreamCall, reason: str) -> None:
        stale = self._call is not call
        if stale:
            return
        self._call = None
        for worker in self._workers:
            if worker is not asyncio.current_task():
                worker.cancel()
        call.cancel()
        if not self.pending:
            return  # an idle stream that ended: reopened on the next send
        self._replica.benched_until = time.monotonic() + _BENCH_S
        log.warning(
            "node replica stream failed", extra={"replica": self._replica.address, "reason": reason}
        )
        failures: dict[int, tuple[FailureHandler, list[node_pb2.NodeTask]]] = {}
        for key in list(self.pending):
            entry = self._take(key)
            assert entry is not None
            failures.setdefault(id(entry.on_failure), (entry.on_failure, []))[1].append(entry.task)
        message = f"NodeUnavailable: replica {self._replica.address} failed: {reason}"
        for handler, tasks in failures.values():
            handler(tasks, message)

    async def close(self) -> None:
        call, self._call = self._call, None
        for worker in self._workers:
            worker.cancel()
        if call is not None:
            call.cancel()


@dataclass
class _Replica:
    address: str
    stub: node_pb2_grpc.NodeServiceStub
    channel: grpc.aio.Channel
    benched_until: float = 0.0
    in_flight: int = 0
    calls: int = 0
    writes: int = 0  # messages written on its work stream
    stream: _WorkStream | None = None
    origin: str = ""  # the dns target it was resolved from
    retired: bool = False  # no longer resolved: gets no new work, dropped once idle


def _connectable(channel: grpc.aio.Channel) -> bool:
    """Whether a call on the channel would reach its server, or wait for the connection
    being made; False in TRANSIENT_FAILURE, where gRPC fails a call at once (UNAVAILABLE)
    without trying. A replica that was down stays so until the channel's next reconnect,
    seconds after the replica is back (the reconnect backoff grew while it was down): sent
    there, an attempt would come back NodeUnavailable and be re-dispatched as a new attempt
    on a replica that was alive all along. An idle channel is asked to connect."""
    state = channel.get_state(try_to_connect=True)
    return state is not grpc.ChannelConnectivity.TRANSIENT_FAILURE


def _dns_name(address: str) -> tuple[str, str] | None:
    """(host, port) of a `dns:[//authority]/host:port` target; None for other targets."""
    if not address.startswith("dns:"):
        return None
    rest = address.removeprefix("dns:")
    if rest.startswith("//"):
        rest = rest[2:].partition("/")[2]
    host, _, port = rest.rpartition(":")
    return (host.strip("[]"), port) if host and port else None


def _targets(infos: Sequence[tuple[Any, ...]], port: str) -> list[str]:
    addresses = sorted({info[4][0] for info in infos})
    return [f"ipv6:[{ip}]:{port}" if ":" in ip else f"ipv4:{ip}:{port}" for ip in addresses]


def _resolve_now(host: str, port: str) -> list[str]:
    try:
        return _targets(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), port)
    except OSError:
        return []


class NodeDispatcher:
    """Sends node attempts to node replicas and routes their outcomes back.

    A `dns:///name:port` address stands for every replica the name resolves to (a
    Kubernetes headless service, a compose service with several containers): a work stream
    is pinned to one server, so the dispatcher resolves the name itself, keeps a replica per
    address, and re-resolves every few seconds to follow scaling (a vanished replica is
    retired once nothing runs on it).
    """

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        batch_size: int = 128,
        default_timeout_s: float = 3600.0,
        service_token: str = "",
        tls: TlsFiles | None = None,
        resolve_every_s: float = 10.0,
    ) -> None:
        if not addresses:
            raise ValueError("HEDDLE_NODE_ADDRESSES: at least one node replica address is needed")
        self._service_token = service_token
        self._tls = tls
        self._replicas: list[_Replica] = []
        self._names: dict[str, tuple[str, str]] = {}  # dns target -> (host, port)
        for address in addresses:
            name = _dns_name(address)
            if name is None:
                self._add(address, tls)
                continue
            self._names[address] = name
            resolved = _resolve_now(*name)
            for target in resolved or [address]:  # unresolvable now: let gRPC retry the name
                self._add(target, self._tls_for(name[0]), origin=address)
        self._turn = 0
        self._last: _Replica | None = None  # the last _pick_shared
        self._batch_size = batch_size
        self._default_timeout_s = default_timeout_s
        self._metadata = ((AUTH_METADATA_KEY, service_token),) if service_token else ()
        self._resolve_every_s = resolve_every_s
        self._resolver: asyncio.Task[None] | None = None
        #: The workers connected to this replica (custom node types); None: none served.
        self.workers: WorkerPool | None = None
        self.relay: WorkerRelay | None = None

    def _tls_for(self, host: str) -> TlsFiles | None:
        # Certificates name the service, not the pod address the channel now dials.
        if self._tls is None or self._tls.server_name:
            return self._tls
        return dataclasses.replace(self._tls, server_name=host)

    def _add(self, address: str, tls: TlsFiles | None, origin: str = "") -> None:
        channel = create_channel(address, service_token=self._service_token, tls=tls)
        stub = node_pb2_grpc.NodeServiceStub(channel)
        self._replicas.append(_Replica(address, stub, channel, origin=origin))

    async def _resolve(self) -> None:
        loop = asyncio.get_running_loop()
        for target, (host, port) in self._names.items():
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                continue  # keep what we have until the name resolves again
            self._follow(target, host, _targets(infos, port))
        await self._drop_retired()

    def _follow(self, target: str, host: str, wanted: list[str]) -> None:
        known = {replica.address for replica in self._replicas}
        for address in wanted:
            if address not in known:
                log.info("node replica appeared", extra={"replica": address})
                self._add(address, self._tls_for(host), origin=target)
        for replica in self._replicas:
            # (The name itself, dialled while it did not resolve, retires once it does.)
            if replica.origin == target and wanted:
                replica.retired = replica.address not in wanted

    async def _drop_retired(self) -> None:
        for replica in [r for r in self._replicas if r.retired and r.in_flight == 0]:
            log.info("node replica retired", extra={"replica": replica.address})
            self._replicas.remove(replica)
            if replica.stream is not None:
                await replica.stream.close()
            await replica.channel.close()

    def stubs(self) -> list[node_pb2_grpc.NodeServiceStub]:
        """One stub per replica, healthy ones first."""
        now = time.monotonic()
        return [r.stub for r in sorted(self._replicas, key=lambda r: r.benched_until > now)]

    def stats(self) -> dict[str, int]:
        """Calls and work messages sent per replica address (for tests and metrics)."""
        return {replica.address: replica.calls for replica in self._replicas}

    def _pick(self) -> _Replica:
        now = time.monotonic()
        live = [r for r in self._replicas if not r.retired] or self._replicas
        for _ in range(len(live)):
            self._turn += 1
            replica = live[self._turn % len(live)]
            if replica.benched_until <= now and (
                # A replica whose work stream is open is reached (a failing channel breaks
                # the stream, which benches the replica): no channel state asked per pick.
                (replica.stream is not None and replica.stream.open)
                or _connectable(replica.channel)
            ):
                return replica
        # Every replica is benched or cannot connect: rather than stall, try one that can
        # connect, else the least recently benched.
        return min(live, key=lambda r: (not _connectable(r.channel), r.benched_until))

    def dispatch(
        self,
        tasks: Sequence[node_pb2.NodeTask],
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
    ) -> DispatchHandle:
        """Start sending tasks; returns at once. Handlers run on the event loop."""
        if self._names and self._resolver is None:
            self._resolver = periodic("node-resolver", self._resolve_every_s, self._resolve)
        handle = DispatchHandle()
        batch: list[node_pb2.NodeTask] = []
        custom: list[node_pb2.NodeTask] = []
        for task in tasks:
            if "." in task.node_type and self.workers is not None:
                custom.append(task)  # a custom type (namespaced): served by workers
            elif task.timeout_s > 0 and task.node_type in JOURNALED_TYPES:
                timeout_s = max(self._default_timeout_s, task.timeout_s + 1.0)
                self._stream(self._pick()).send([task], handle, timeout_s, on_outcomes, on_failure)
            elif task.timeout_s > 0:
                self._start_call(handle, [task], task.timeout_s + 1.0, on_outcomes, on_failure)
            else:
                batch.append(task)
        if 0 < len(batch) < _WAVE:
            # A step or a few: they join the attempts another execution sent this loop turn
            # (or while that stream's write is in flight), one message for all of them.
            self._stream(self._pick_shared()).send(
                batch, handle, self._default_timeout_s, on_outcomes, on_failure
            )
        elif batch:
            # Spread a large wave evenly: a share per replica rather than one big message.
            parts = min(len(self._replicas), max(1, len(batch) // _WAVE))
            for index in range(parts):
                for start in range(0, len(batch[index::parts]), self._batch_size):
                    part = batch[index::parts][start : start + self._batch_size]
                    self._stream(self._pick()).send(
                        part, handle, self._default_timeout_s, on_outcomes, on_failure
                    )
        if custom and self.workers is not None:
            self.workers.dispatch(custom, handle, on_outcomes, on_failure)
        return handle

    def _pick_shared(self) -> _Replica:
        """The replica picked last while its stream holds attempts not written yet (and it
        still takes work), else the next one in turn: with many executions each sending a
        step, the steps of one loop turn go out as one message to one replica (one gRPC
        write here, one read and one reply there) instead of one message each, spread."""
        last = self._last
        if (
            last is not None
            and last.stream is not None
            and last.stream.unsent
            and not last.retired
            and last.benched_until <= time.monotonic()
        ):
            return last
        self._last = replica = self._pick()
        return replica

    def _stream(self, replica: _Replica) -> _WorkStream:
        if replica.stream is None:
            replica.stream = _WorkStream(replica, self._metadata)
        return replica.stream

    def _start_call(
        self,
        handle: DispatchHandle,
        tasks: list[node_pb2.NodeTask],
        deadline_s: float | None,
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
    ) -> None:
        replica = self._pick()
        call = asyncio.create_task(
            self._call(
                replica, tasks, deadline_s or self._default_timeout_s, on_outcomes, on_failure
            )
        )
        handle.tasks.add(call)
        call.add_done_callback(handle.tasks.discard)

    async def _call(
        self,
        replica: _Replica,
        tasks: list[node_pb2.NodeTask],
        deadline_s: float,
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
    ) -> None:
        pending = {(task.node_id, task.attempt): task for task in tasks}
        replica.in_flight += len(tasks)
        replica.calls += 1
        DISPATCH_IN_FLIGHT.inc(len(tasks))
        try:
            if len(tasks) == 1 and tasks[0].node_type not in STREAMING_TYPES:
                # A lone attempt with a deadline: unary, cheaper than a server stream.
                outcome = await replica.stub.ExecuteNode(tasks[0], timeout=deadline_s)
                pending.clear()
                on_outcomes([outcome])
                return
            call = replica.stub.ExecuteNodes(
                node_pb2.ExecuteNodesRequest(tasks=tasks), timeout=deadline_s
            )
            async for response in call:
                for outcome in response.outcomes:
                    if outcome.kind != node_pb2.NodeOutcome.PROGRESS:
                        pending.pop((outcome.node_id, outcome.attempt), None)
                on_outcomes(response.outcomes)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                reason = f"DeadlineExceeded: node did not finish within {deadline_s - 1.0:g} s"
            else:
                replica.benched_until = time.monotonic() + _BENCH_S
                reason = f"NodeUnavailable: replica {replica.address} failed: {error.code().name}"
                log.warning("node replica call failed", extra={"replica": replica.address})
            if pending:
                on_failure(list(pending.values()), reason)
            return
        finally:
            replica.in_flight -= len(tasks)
            DISPATCH_IN_FLIGHT.dec(len(tasks))
        if pending:
            # The stream ended without an outcome for some attempts: treat as a replica fault.
            on_failure(list(pending.values()), "NodeUnavailable: replica returned no outcome")

    def pending_attempts(self) -> int:
        """Attempts on a work stream (node replicas, peer relays) or held for a worker, not
        yet answered: none once every execution's attempts ended."""
        streams = [r.stream for r in self._replicas]
        if self.relay is not None:
            streams += [peer.stream for peer in self.relay._peers.values()]
        held = sum(len(stream.pending) for stream in streams if stream is not None)
        if self.workers is not None:
            held += len(self.workers._attempts)
        return held

    async def close(self) -> None:
        if self.relay is not None:
            await self.relay.close()
        if self._resolver is not None:
            self._resolver.cancel()
        for replica in self._replicas:
            if replica.stream is not None:
                await replica.stream.close()
            await replica.channel.close()


class _RelayStub:
    """Another workflow replica's WorkerService.Relay, shaped as a node replica's stub: the
    relay stream is a `Work` stream, so `_WorkStream` carries it unchanged."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.Work = worker_pb2_grpc.WorkerServiceStub(channel).Relay


class WorkerRelay:
    """Relays attempts of custom types to the replicas whose workers serve them (the
    `RemoteRoute` of the worker pool): one relay stream per peer replica, opened on first
    use; a broken one hands its attempts back to the engine like a node replica's."""

    def __init__(
        self,
        lookup: Callable[[tuple[str, str]], str | None],
        *,
        service_token: str = "",
        tls: TlsFiles | None = None,
        default_timeout_s: float = 3600.0,
    ) -> None:
        self.lookup = lookup
        self._service_token = service_token
        self._tls = tls
        self._default_timeout_s = default_timeout_s
        self._metadata = ((AUTH_METADATA_KEY, service_token),) if service_token else ()
        self._peers: dict[str, _Replica] = {}

    def send(
        self,
        address: str,
        task: node_pb2.NodeTask,
        handle: Any,
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
    ) -> None:
        peer = self._peers.get(address)
        if peer is None:
            channel = create_channel(address, service_token=self._service_token, tls=self._tls)
            stub = cast(node_pb2_grpc.NodeServiceStub, _RelayStub(channel))
            peer = self._peers[address] = _Replica(address, stub, channel)
            log.info("relaying to the workers of a peer replica", extra={"peer": address})
        if peer.stream is None:
            peer.stream = _WorkStream(peer, self._metadata)
        timeout_s = task.timeout_s + 10.0 if task.timeout_s > 0 else self._default_timeout_s
        if handle is None:
            handle = DispatchHandle()
        peer.stream.send([task], handle, timeout_s, on_outcomes, on_failure)

    async def close(self) -> None:
        for peer in self._peers.values():
            if peer.stream is not None:
                await peer.stream.close()
            await peer.channel.close()
