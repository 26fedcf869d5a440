"""Fan-out of node attempts to the node replicas.

Ready nodes are sent in batches (one server-streaming `ExecuteNodes` call carries many), spread
round-robin over every replica; outcomes stream back as they finish. A node with `timeout_s`
travels alone so its timeout is the call's gRPC deadline. When a replica fails a call, the
attempts that had no outcome yet are handed back to the engine, which re-dispatches them as
new attempts (on another replica: the failed one is benched for a moment).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from heddle.v1 import node_pb2, node_pb2_grpc

from libs.common.grpcutil import TlsFiles, create_channel
from libs.common.metrics import DISPATCH_IN_FLIGHT

log = logging.getLogger(__name__)

OutcomeHandler = Callable[[Sequence[node_pb2.NodeOutcome]], None]
FailureHandler = Callable[[Sequence[node_pb2.NodeTask], str], None]

_BENCH_S = 2.0
#: Node types that report progress while they run: they always travel on a stream.
STREAMING_TYPES = frozenset({"llm"})


@dataclass
class _Replica:
    address: str
    stub: node_pb2_grpc.NodeServiceStub
    channel: grpc.aio.Channel
    benched_until: float = 0.0
    in_flight: int = 0
    calls: int = 0


@dataclass
class DispatchHandle:
    """The calls carrying one dispatch; cancelling it cancels them (and the node attempts)."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()


class NodeDispatcher:
    """Sends node attempts to node replicas and routes their outcomes back."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        batch_size: int = 128,
        default_timeout_s: float = 3600.0,
        service_token: str = "",
        tls: TlsFiles | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("HEDDLE_NODE_ADDRESSES: at least one node replica address is needed")
        self._replicas = [
            _Replica(address, node_pb2_grpc.NodeServiceStub(channel), channel)
            for address in addresses
            for channel in [create_channel(address, service_token=service_token, tls=tls)]
        ]
        self._next = itertools.cycle(range(len(self._replicas)))
        self._batch_size = batch_size
        self._default_timeout_s = default_timeout_s

    def stubs(self) -> list[node_pb2_grpc.NodeServiceStub]:
        """One stub per replica, healthy ones first."""
        now = time.monotonic()
        return [r.stub for r in sorted(self._replicas, key=lambda r: r.benched_until > now)]

    def stats(self) -> dict[str, int]:
        """Calls made per replica address (for tests and metrics)."""
        return {replica.address: replica.calls for replica in self._replicas}

    def _pick(self) -> _Replica:
        now = time.monotonic()
        for _ in range(len(self._replicas)):
            replica = self._replicas[next(self._next)]
            if replica.benched_until <= now:
                return replica
        # Every replica is benched: try the least recently benched rather than stall.
        return min(self._replicas, key=lambda r: r.benched_until)

    def dispatch(
        self,
        tasks: Sequence[node_pb2.NodeTask],
        on_outcomes: OutcomeHandler,
        on_failure: FailureHandler,
    ) -> DispatchHandle:
        """Start sending tasks; returns at once. Handlers run on the event loop."""
        handle = DispatchHandle()
        batch: list[node_pb2.NodeTask] = []
        for task in tasks:
            if task.timeout_s > 0:
                self._start_call(handle, [task], task.timeout_s + 1.0, on_outcomes, on_failure)
                continue
            batch.append(task)
            if len(batch) >= self._batch_size:
                self._start_call(handle, batch, None, on_outcomes, on_failure)
                batch = []
        if batch:
            # Spread a large wave evenly: one call per replica rather than one big one.
            parts = min(len(self._replicas), max(1, len(batch) // 8))
            for index in range(parts):
                part = batch[index::parts]
                if part:
                    self._start_call(handle, part, None, on_outcomes, on_failure)
        return handle

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
                # A lone attempt (a chain's step) goes unary: cheaper than opening a stream.
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

    async def close(self) -> None:
        for replica in self._replicas:
            await replica.channel.close()
