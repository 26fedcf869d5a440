"""NodeService over gRPC: attempts in (one call or a stream), outcomes out; the attempt
itself is services/node/attempts.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import grpc
from heddle.v1 import node_pb2, node_pb2_grpc

from libs.common import jsonutil
from services.node.attempts import Journal, NodeRunner, Outcome
from services.node.executors.base import NodeError

#: (execution, node, attempt, seq) of a journal write waiting for its acknowledgement.
AckKey = tuple[str, str, int, int]


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, runner: NodeRunner, max_concurrent: int) -> None:
        self.runner = runner
        self.types_json = jsonutil.dumps(
            [spec.model_dump(mode="json") for spec in runner.registry.specs()]
        )
        self.slots = asyncio.Semaphore(max_concurrent)
        self.in_flight = 0

    async def ListNodeTypes(
        self, request: node_pb2.ListNodeTypesRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.ListNodeTypesResponse:
        return node_pb2.ListNodeTypesResponse(node_types_json=self.types_json)

    async def _run(
        self,
        task: node_pb2.NodeTask,
        done: asyncio.Queue[Outcome],
        acks: dict[AckKey, asyncio.Future[bool]] | None = None,
    ) -> None:
        def progress(data: dict[str, Any]) -> None:
            done.put_nowait(
                Outcome(
                    execution_id=task.execution_id,
                    node_id=task.node_id,
                    attempt=task.attempt,
                    kind=Outcome.PROGRESS,
                    output_json=jsonutil.dumps(data),
                )
            )

        journal: Journal | None = None
        if acks is not None:
            sequence = iter(range(1, 1 << 62))

            async def journal(data: dict[str, Any]) -> None:
                # Sent as progress with an "ack" number; the owner answers once it committed.
                seq = next(sequence)
                key = (task.execution_id, task.node_id, task.attempt, seq)
                waiter = acks[key] = asyncio.get_running_loop().create_future()
                try:
                    progress({**data, "ack": seq})
                    accepted = await waiter
                finally:
                    acks.pop(key, None)
                if not accepted:
                    raise NodeError(
                        "Fenced",
                        "the workflow service refused the journal write: this attempt is no "
                        "longer the node's current one",
                    )

        async with self.slots:
            self.in_flight += 1
            try:
                done.put_nowait(await self.runner.run(task, progress, journal))
            finally:
                self.in_flight -= 1

    async def ExecuteNode(
        self, request: node_pb2.NodeTask, context: grpc.aio.ServicerContext
    ) -> node_pb2.NodeOutcome:
        async with self.slots:
            self.in_flight += 1
            try:
                return await self.runner.run(request)
            finally:
                self.in_flight -= 1

    async def Work(
        self,
        requests: AsyncIterator[node_pb2.WorkRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[node_pb2.ExecuteNodesResponse]:
        """Attempts arrive as messages and run concurrently; outcomes go back batched, as
        they finish. The stream ending (or breaking) cancels what still runs: the dispatcher
        retries those attempts elsewhere."""
        done: asyncio.Queue[Outcome | None] = asyncio.Queue()  # None: the dispatcher closed
        running: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        acks: dict[AckKey, asyncio.Future[bool]] = {}  # journal writes awaiting their commit

        def finished(key: tuple[str, str, int], task: asyncio.Future[None]) -> None:
            if running.get(key) is task:
                del running[key]

        async def receive() -> None:
            async for request in requests:
                for ref in request.cancel:
                    cancelled = running.pop((ref.execution_id, ref.node_id, ref.attempt), None)
                    if cancelled is not None:
                        cancelled.cancel()
                for ack in request.acks:
                    waiter = acks.get((ack.execution_id, ack.node_id, ack.attempt, ack.seq))
                    if waiter is not None and not waiter.done():
                        waiter.set_result(ack.accepted)
                for task in request.tasks:
                    key = (task.execution_id, task.node_id, task.attempt)
                    attempt = asyncio.create_task(
                        self._run(task, done, acks)  # type: ignore[arg-type]
                    )
                    attempt.add_done_callback(functools.partial(finished, key))
                    running[key] = attempt
            done.put_nowait(None)

        receiver = asyncio.create_task(receive())
        closing = False
        try:
            while not (closing and done.empty() and all(t.done() for t in running.values())):
                batch: list[Outcome] = []
                item = await done.get()
                while True:
                    if item is None:
                        closing = True  # finish what runs, then end the stream
                    else:
                        batch.append(item)
                    if done.empty():
                        break
                    item = done.get_nowait()
                if batch:
                    yield node_pb2.ExecuteNodesResponse(outcomes=batch)
        finally:
            receiver.cancel()
            for attempt in running.values():
                attempt.cancel()

    async def ExecuteNodes(
        self, request: node_pb2.ExecuteNodesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[node_pb2.ExecuteNodesResponse]:
        done: asyncio.Queue[Outcome] = asyncio.Queue()
        tasks = [asyncio.create_task(self._run(task, done)) for task in request.tasks]
        remaining = len(tasks)
        try:
            while remaining:
                batch = [await done.get()]
                while not done.empty():
                    batch.append(done.get_nowait())
                remaining -= sum(1 for outcome in batch if outcome.kind != Outcome.PROGRESS)
                yield node_pb2.ExecuteNodesResponse(outcomes=batch)
        finally:
            # The caller cancelled (execution cancelled, deadline): stop the attempts too.
            for task in tasks:
                task.cancel()
