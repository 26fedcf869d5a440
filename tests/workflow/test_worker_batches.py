"""Batching on the worker stream (issue #14): a worker that registers with `batches` gets
the attempts ready at one moment in one AttemptBatch, and the outcomes it sends in one
OutcomeBatch are each applied exactly once; a worker that does not (an older SDK) still
gets one Attempt per message. Driven over worker.proto directly, on the embedded stack.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import httpx
import pytest
from heddle.v1 import node_pb2, worker_pb2, worker_pb2_grpc

from libs.cli.stack import Stack
from tests.integration.helpers import create_workflow, events, node, run, wait_final

WIDTH = 6


class RawWorker:
    """One Connect stream, read and written by the test itself."""

    def __init__(self, stack: Stack, node_type: str, *, batches: bool) -> None:
        address = f"127.0.0.1:{stack.services['workflow'].workers.port}"
        self.channel = grpc.aio.insecure_channel(address)
        stub = worker_pb2_grpc.WorkerServiceStub(self.channel)
        self.call: Any = stub.Connect(metadata=(("x-api-key", stack.admin_key),))
        self.node_type = node_type
        self.batches = batches

    async def register(self) -> worker_pb2.Registered:
        declared = worker_pb2.CustomNodeType(type=self.node_type, version="1")
        register = worker_pb2.Register(
            worker_name="raw", node_types=[declared], max_concurrency=64, batches=self.batches
        )
        await self.call.write(worker_pb2.WorkerMessage(register=register))
        first = await self.call.read()
        assert first.WhichOneof("body") == "registered", first
        registered: worker_pb2.Registered = first.registered
        return registered

    async def read_attempts(self, count: int) -> tuple[list[str], list[worker_pb2.Attempt]]:
        """Messages until `count` attempts arrived: each message's kind, and the attempts."""
        kinds: list[str] = []
        attempts: list[worker_pb2.Attempt] = []
        async with asyncio.timeout(15):
            while len(attempts) < count:
                message = await self.call.read()
                assert message is not grpc.aio.EOF, "the stream ended"
                kind = message.WhichOneof("body")
                kinds.append(kind)
                if kind == "attempt":
                    attempts.append(message.attempt)
                elif kind == "attempts":
                    attempts.extend(message.attempts.attempts)
        return kinds, attempts

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def succeeded(attempt: worker_pb2.Attempt, output: dict[str, Any]) -> worker_pb2.WorkerOutcome:
    return worker_pb2.WorkerOutcome(
        outcome=node_pb2.NodeOutcome(
            execution_id=attempt.execution_id,
            node_id=attempt.node_id,
            attempt=attempt.attempt,
            kind=node_pb2.NodeOutcome.SUCCEEDED,
            output_json=json.dumps(output).encode(),
            all_ports=True,
        )
    )


def wide(node_type: str, width: int) -> dict[str, Any]:
    nodes = [{"id": f"n{i}", "type": node_type} for i in range(width)]
    return {"name": f"wide-{node_type}", "nodes": nodes, "edges": []}


@pytest.mark.parametrize("stack", [{"worker_port": 0}], indirect=True)
async def test_attempts_and_outcomes_travel_in_batches_each_applied_once(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    worker = RawWorker(stack, "acme.batched", batches=True)
    older = RawWorker(stack, "acme.single", batches=False)
    try:
        assert (await worker.register()).batches is True
        assert (await older.register()).batches is False

        # One wave of WIDTH attempts is dispatched at once: it arrives as one AttemptBatch.
        workflow_id = await create_workflow(client, wide("acme.batched", WIDTH))
        execution_id = await run(client, workflow_id)
        kinds, attempts = await worker.read_attempts(WIDTH)
        assert kinds == ["attempts"], kinds
        assert sorted(a.node_id for a in attempts) == [f"n{i}" for i in range(WIDTH)]
        assert len({a.idempotency_key for a in attempts}) == WIDTH

        # All outcomes in one OutcomeBatch, the first one repeated in it, and a late repeat
        # of another with a different output: each node's end is applied once, the first.
        first = [succeeded(a, {"node": a.node_id, "copy": 1}) for a in attempts]
        repeated = succeeded(attempts[0], {"node": attempts[0].node_id, "copy": 2})
        batch = worker_pb2.OutcomeBatch(outcomes=[*first, repeated])
        await worker.call.write(worker_pb2.WorkerMessage(outcomes=batch))
        late = succeeded(attempts[1], {"node": attempts[1].node_id, "copy": 3})
        await worker.call.write(worker_pb2.WorkerMessage(outcome=late))

        execution = await wait_final(client, execution_id)
        assert execution["status"] == "succeeded", execution["error"]
        for i in range(WIDTH):
            run_ = node(execution, f"n{i}")
            assert run_["status"] == "succeeded"
            assert run_["attempts"] == 1
            assert run_["output"] == {"node": f"n{i}", "copy": 1}
        stream = await events(client, execution_id)
        completed = [e["node_id"] for e in stream if e["type"] == "node.completed"]
        assert sorted(completed) == [f"n{i}" for i in range(WIDTH)], completed

        # A worker that did not ask for batches (an older SDK) gets one Attempt a message,
        # and its lone WorkerOutcome messages are applied as before.
        single_id = await create_workflow(client, wide("acme.single", 3))
        single_execution = await run(client, single_id)
        kinds, attempts = await older.read_attempts(3)
        assert kinds == ["attempt"] * 3, kinds
        for attempt in attempts:
            outcome = succeeded(attempt, {"node": attempt.node_id})
            await older.call.write(worker_pb2.WorkerMessage(outcome=outcome))
        done = await wait_final(client, single_execution)
        assert done["status"] == "succeeded", done["error"]
        assert node(done, "n2")["output"] == {"node": "n2"}
    finally:
        await worker.close()
        await older.close()
