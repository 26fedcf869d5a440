"""A minimal worker written against protos/heddle/v1/worker.proto only (no SDK): what the
cluster-side tests drive, in process or as a process of its own
(`python -m tests.worker_stub --server HOST:PORT --api-key KEY --types acme.upper,acme.slow`).

Its types: acme.upper (upper-cases params.text), acme.slow (sleeps params.seconds, counting
each start in a file when --starts is given), acme.concat (joins its list port `items`),
acme.fail (raises a non-retryable error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from heddle.v1 import common_pb2, node_pb2, worker_pb2, worker_pb2_grpc

Handler = Callable[
    ["StubWorker", worker_pb2.Attempt, dict[str, Any], dict[str, Any]], Awaitable[Any]
]


def _schema(properties: dict[str, Any], required: list[str]) -> bytes:
    return json.dumps({"type": "object", "properties": properties, "required": required}).encode()


def declared(name: str, **extra: Any) -> worker_pb2.CustomNodeType:
    """The declaration of one of the stub's types (extra fields override)."""
    types: dict[str, dict[str, Any]] = {
        "acme.upper": {
            "title": "Upper-case",
            "category": "text",
            "description": "Upper-cases params.text.",
            "params_schema_json": _schema({"text": {"type": "string"}}, ["text"]),
            "output_schema_json": _schema({"text": {"type": "string"}}, ["text"]),
        },
        "acme.slow": {
            "title": "Slow",
            "category": "testing",
            "params_schema_json": _schema({"seconds": {"type": "number"}}, ["seconds"]),
        },
        "acme.concat": {
            "title": "Concatenate",
            "category": "text",
            "input_ports": ["items"],
            "list_input_ports": ["items"],
        },
        "acme.fail": {"title": "Fail", "category": "testing"},
    }
    base = types[name]
    return worker_pb2.CustomNodeType(type=name, **{"version": "1", **base, **extra})


async def _upper(worker: StubWorker, attempt: Any, params: dict[str, Any], inputs: Any) -> Any:
    await worker.log(attempt, "info", f"upper-casing {len(params['text'])} characters")
    return {"text": str(params["text"]).upper(), "worker": worker.name}


async def _slow(worker: StubWorker, attempt: Any, params: dict[str, Any], inputs: Any) -> Any:
    if worker.starts_file is not None:
        with worker.starts_file.open("a") as handle:
            handle.write(f"{attempt.node_id} {attempt.attempt} {attempt.idempotency_key}\n")
    await asyncio.sleep(float(params["seconds"]))
    return {"slept": params["seconds"], "worker": worker.name}


async def _concat(worker: StubWorker, attempt: Any, params: dict[str, Any], inputs: Any) -> Any:
    return {"joined": "".join(str(item.get("text", item)) for item in inputs["items"])}


class NonRetryable(Exception):
    pass


async def _fail(worker: StubWorker, attempt: Any, params: dict[str, Any], inputs: Any) -> Any:
    raise NonRetryable("this node always fails")


HANDLERS: dict[str, Handler] = {
    "acme.upper": _upper,
    "acme.slow": _slow,
    "acme.concat": _concat,
    "acme.fail": _fail,
}


class StubWorker:
    def __init__(
        self,
        address: str,
        api_key: str,
        types: list[worker_pb2.CustomNodeType],
        *,
        name: str = "stub",
        max_concurrency: int = 8,
        starts_file: Path | None = None,
        heartbeats: bool = True,
    ) -> None:
        self.address = address
        self.api_key = api_key
        self.types = types
        self.name = name
        self.max_concurrency = max_concurrency
        self.starts_file = starts_file
        self.heartbeats = heartbeats
        self.registered: worker_pb2.Registered | None = None
        self.attempts: list[worker_pb2.Attempt] = []
        self.cancelled: list[node_pb2.AttemptRef] = []
        self._outbox: asyncio.Queue[worker_pb2.WorkerMessage | None] = asyncio.Queue()
        self._running: dict[tuple[str, str, int], asyncio.Task[None]] = {}
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    async def start(self) -> worker_pb2.Registered:
        """Connect and register; raises grpc.aio.AioRpcError when refused."""
        self._channel = grpc.aio.insecure_channel(self.address)
        metadata = (("x-api-key", self.api_key),) if self.api_key else ()
        self._call = worker_pb2_grpc.WorkerServiceStub(self._channel).Connect(metadata=metadata)
        register = worker_pb2.Register(
            worker_name=self.name,
            node_types=self.types,
            max_concurrency=self.max_concurrency,
            sdk_version="stub",
        )
        try:
            await self._call.write(worker_pb2.WorkerMessage(register=register))
        except grpc.aio.AioRpcError:
            raise
        except Exception:  # the call already ended: its status says why
            await self._call
            raise
        first = await self._call.read()
        if first is grpc.aio.EOF:
            await self._call  # raises the status
            raise RuntimeError("stream ended before Registered")
        self.registered = first.registered
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._send())]
        if self.heartbeats:
            self._tasks.append(asyncio.create_task(self._beat()))
        return self.registered

    async def _send(self) -> None:
        try:
            while True:
                message = await self._outbox.get()
                if message is None:
                    await self._call.done_writing()
                    return
                await self._call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass

    async def _beat(self) -> None:
        assert self.registered is not None
        while True:
            await asyncio.sleep(self.registered.heartbeat_interval_s / 2)
            self._outbox.put_nowait(worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat()))

    async def _receive(self) -> None:
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    return
                kind = message.WhichOneof("body")
                if kind == "attempt":
                    attempt = message.attempt
                    self.attempts.append(attempt)
                    key = (attempt.execution_id, attempt.node_id, attempt.attempt)
                    self._running[key] = asyncio.create_task(self._run(attempt))
                elif kind == "cancel":
                    self.cancelled.append(message.cancel)
                    ref = message.cancel
                    task = self._running.pop((ref.execution_id, ref.node_id, ref.attempt), None)
                    if task is not None:
                        task.cancel()
        except grpc.aio.AioRpcError:
            pass
        finally:
            self.closed.set()

    async def _run(self, attempt: worker_pb2.Attempt) -> None:
        started = time.time()
        outcome = node_pb2.NodeOutcome(
            execution_id=attempt.execution_id,
            node_id=attempt.node_id,
            attempt=attempt.attempt,
            started_at=started,
        )
        try:
            params = json.loads(attempt.params_json or b"{}")
            inputs = json.loads(attempt.inputs_json or b"{}")
            output = await HANDLERS[attempt.node_type](self, attempt, params, inputs)
            outcome.kind = node_pb2.NodeOutcome.SUCCEEDED
            outcome.output_json = json.dumps(output).encode()
            outcome.all_ports = True
        except asyncio.CancelledError:
            return
        except Exception as error:
            outcome.kind = node_pb2.NodeOutcome.FAILED
            outcome.error.CopyFrom(
                common_pb2.ErrorInfo(
                    type=type(error).__name__,
                    message=str(error),
                    retryable=not isinstance(error, NonRetryable),
                )
            )
        finally:
            self._running.pop((attempt.execution_id, attempt.node_id, attempt.attempt), None)
        outcome.finished_at = time.time()
        self._outbox.put_nowait(
            worker_pb2.WorkerMessage(outcome=worker_pb2.WorkerOutcome(outcome=outcome))
        )

    async def log(self, attempt: worker_pb2.Attempt, level: str, message: str) -> None:
        ref = node_pb2.AttemptRef(
            execution_id=attempt.execution_id, node_id=attempt.node_id, attempt=attempt.attempt
        )
        self._outbox.put_nowait(
            worker_pb2.WorkerMessage(
                log=worker_pb2.WorkerLog(attempt=ref, level=level, message=message, at=time.time())
            )
        )

    def running(self) -> int:
        return len(self._running)

    async def drain(self) -> None:
        """SIGTERM: tell the cluster, finish what runs, then close the stream."""
        self._outbox.put_nowait(worker_pb2.WorkerMessage(drain=worker_pb2.Drain()))
        running = list(self._running.values())
        if running:
            await asyncio.wait(running)
        await asyncio.sleep(0.05)  # let the last outcome leave
        await self.stop()

    async def stop(self) -> None:
        self._outbox.put_nowait(None)
        for task in self._tasks:
            task.cancel()
        for task in list(self._running.values()):
            task.cancel()
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()
        self.closed.set()


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--types", default="acme.upper,acme.slow")
    parser.add_argument("--name", default="stub")
    parser.add_argument("--starts", default="")
    args = parser.parse_args()
    worker = StubWorker(
        args.server,
        args.api_key,
        [declared(name) for name in args.types.split(",")],
        name=args.name,
        starts_file=Path(args.starts) if args.starts else None,
    )
    await worker.start()
    print("registered", flush=True)
    loop = asyncio.get_running_loop()
    drained = asyncio.Event()

    def on_term() -> None:
        async def go() -> None:
            await worker.drain()
            drained.set()

        loop.create_task(go())  # noqa: RUF006 - awaited through `drained`

    loop.add_signal_handler(signal.SIGTERM, on_term)
    await worker.closed.wait()
    if worker.running() == 0 and not drained.is_set():
        return


if __name__ == "__main__":
    asyncio.run(_main())
