"""heddle_sdk.Worker against the real cluster side (the workflow service's worker endpoint
in an embedded stack): registration, the example worker's tour workflow through the HTTP
API, retryable and non-retryable errors, logs, streamed text, secrets, cancellation, a
refused key, reconnecting with backoff, SIGTERM drain and kill -9 of a worker process."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from heddle_sdk import Context, NodeError, Worker, WorkerError, node_type

from libs.cli.stack import Stack, free_port, start_stack
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, events, node, run, wait_final

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "worker"
FAST = {
    "http_allow_hosts": ["127.0.0.1"],
    "worker_heartbeat_interval_s": 0.2,
    "worker_heartbeat_timeout_s": 1.5,
    "worker_presence_refresh_s": 0.2,
}


@pytest.fixture
async def stack(sqlite_url: str) -> AsyncIterator[Stack]:
    running = await start_stack(
        {"database_url": sqlite_url, "worker_port": 0, **FAST}, ephemeral_ports=True
    )
    try:
        yield running
    finally:
        await running.stop()


def worker_address(stack: Stack) -> str:
    return f"127.0.0.1:{stack.services['workflow'].workers.port}"


@contextlib.asynccontextmanager
async def serving(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.serve())
    try:
        async with asyncio.timeout(15):
            await asyncio.wait(
                {task, asyncio.ensure_future(worker.registered.wait())},
                return_when=asyncio.FIRST_COMPLETED,
            )
        if task.done():
            task.result()  # raises what ended it
        yield task
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError, WorkerError):
            await asyncio.wait_for(task, 10)


def example_module() -> Any:
    sys.path.insert(0, str(EXAMPLE))
    try:
        return importlib.import_module("nodes")
    finally:
        sys.path.remove(str(EXAMPLE))


async def api_key(stack: Stack, scopes: list[str], tenant: str = "default") -> str:
    security = stack.services["gateway"].app.state.security
    _, token = await security.create_api_key(
        tenant_id=tenant, name="sdk-test", scopes=scopes, expires_at=None, created_by="test"
    )
    return str(token)


async def test_the_example_worker_runs_the_tour_workflow(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    worker = Worker(worker_address(stack), stack.admin_key, [example_module()], name="tour")
    async with serving(worker):
        listing = (await client.get("/api/v1/node-types")).json()["node_types"]
        custom = {t["type"]: t for t in listing if t.get("source") == "worker"}
        assert set(custom) == {"acme.slugify", "acme.word_count", "acme.csv_stats"}
        assert custom["acme.csv_stats"]["category"] == "data"
        assert custom["acme.slugify"]["params_schema"]["properties"]["max_length"]["minimum"] == 1
        assert all(t["connected"] for t in custom.values())

        definition = yaml.safe_load((EXAMPLE / "workflow.yaml").read_text())
        workflow_id = await create_workflow(client, definition)
        execution = await wait_final(client, await run(client, workflow_id))
        assert execution["status"] == "succeeded", execution
        assert execution["outputs"] == {
            "slug": "heddle-bring-your-own-code",
            "words": 13,
            "top": [["the", 4], ["worker", 2]],
            "mean_price": 3.3333333333333335,
            "report": "/heddle-bring-your-own-code: 13 words; 3 prices, mean 3.3333333333333335",
        }
        messages: list[Any] = []

        async def logged() -> bool:
            path = f"/api/v1/executions/{execution['id']}/logs"
            records = (await client.get(path)).json()["records"]
            messages[:] = [(r.get("node_id"), r["message"]) for r in records]
            return ("count", "counted words") in messages

        await assert_eventually(logged, timeout=10, message=f"ctx.log not shipped: {messages}")

        # Params that break the custom type's schema fail validation before any run.
        bad = {**definition, "nodes": [*definition["nodes"]]}
        bad["nodes"][1] = {"id": "slug", "type": "acme.slugify", "params": {"text": 3}}
        report = (await client.post("/api/v1/workflows/validate", json=bad)).json()
        assert report["valid"] is False
        assert any(i.get("node_id") == "slug" for i in report["issues"]), report


attempts_seen: list[tuple[int, str]] = []
cancelled: list[str] = []


@node_type("acme.flaky")
async def flaky(ctx: Context) -> dict[str, Any]:
    attempts_seen.append((ctx.attempt, ctx.idempotency_key))
    if ctx.attempt == 1:
        raise RuntimeError("upstream hiccup")
    return {"attempt": ctx.attempt}


@node_type("acme.refuse")
def refuse(reason: str) -> dict[str, Any]:
    raise NodeError(f"refused: {reason}", retryable=False, type="Refused")


@node_type("acme.talk")
async def talk(words: list[str], ctx: Context) -> str:
    for word in words:
        ctx.stream(word + " ")
        await asyncio.sleep(0.05)
    return " ".join(words)


@node_type("acme.reveal")
def reveal(token: str, ctx: Context) -> dict[str, Any]:
    return {"length": len(token), "known": sorted(ctx.secrets)}


@node_type("acme.wait")
async def wait_forever(ctx: Context) -> dict[str, Any]:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        cancelled.append(ctx.node_id)
        raise
    return {}


async def test_errors_retries_streams_secrets_and_cancel(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    attempts_seen.clear()
    cancelled.clear()
    types = [flaky, refuse, talk, reveal, wait_forever]
    async with serving(Worker(worker_address(stack), stack.admin_key, types)):
        workflow_id = await create_workflow(
            client,
            {
                "name": "behaviours",
                "nodes": [
                    {
                        "id": "flaky",
                        "type": "acme.flaky",
                        "retry": {"max_attempts": 3, "initial_delay_s": 0.05},
                    },
                    {"id": "talk", "type": "acme.talk", "params": {"words": ["a", "b", "c"]}},
                ],
            },
        )
        execution = await wait_final(client, await run(client, workflow_id))
        assert execution["status"] == "succeeded", execution
        assert node(execution, "flaky")["output"] == {"attempt": 2}
        assert [a["status"] for a in node(execution, "flaky")["attempt_history"]] == [
            "failed",
            "succeeded",
        ]
        assert [a for a, _ in attempts_seen] == [1, 2]
        assert attempts_seen[0][1] != attempts_seen[1][1]  # one key per attempt
        assert node(execution, "talk")["output"] == {"result": "a b c"}
        chunks = [
            e["data"]["delta"]
            for e in await events(client, execution["id"])
            if e["type"] == "node.text_chunk"
        ]
        assert "".join(chunks) == "a b c "

        refused_id = await create_workflow(
            client,
            {
                "name": "refused",
                "nodes": [
                    {
                        "id": "no",
                        "type": "acme.refuse",
                        "params": {"reason": "bad input"},
                        "retry": {"max_attempts": 3, "initial_delay_s": 0.05},
                    }
                ],
            },
        )
        failed = await wait_final(client, await run(client, refused_id))
        assert failed["status"] == "failed"
        assert node(failed, "no")["attempts"] == 1
        assert node(failed, "no")["error"]["type"] == "Refused"
        assert node(failed, "no")["error"]["message"] == "refused: bad input"

        secret = await client.post("/api/v1/secrets", json={"name": "TOKEN", "value": "s3cr3t"})
        assert secret.status_code in (200, 201), secret.text
        secret_id = await create_workflow(
            client,
            {
                "name": "secretive",
                "nodes": [
                    {"id": "r", "type": "acme.reveal", "params": {"token": "{{ secrets.TOKEN }}"}}
                ],
            },
        )
        revealed = await wait_final(client, await run(client, secret_id))
        assert node(revealed, "r")["output"] == {"length": 6, "known": ["TOKEN"]}

        waiting_id = await create_workflow(
            client, {"name": "waits", "nodes": [{"id": "w", "type": "acme.wait"}]}
        )
        execution_id = await run(client, waiting_id)
        await assert_eventually(
            lambda: _node_status(client, execution_id, "w", "running"), timeout=10
        )
        response = await client.post(f"/api/v1/executions/{execution_id}/cancel")
        assert response.status_code == 200, response.text
        await assert_eventually(lambda: cancelled == ["w"], timeout=10, message="not cancelled")


async def _node_status(
    client: httpx.AsyncClient, execution_id: str, node_id: str, want: str
) -> bool:
    execution = (await client.get(f"/api/v1/executions/{execution_id}")).json()
    return bool(node(execution, node_id)["status"] == want)


async def test_a_viewer_key_is_refused_for_good(stack: Stack) -> None:
    viewer = await api_key(stack, ["read"])
    worker = Worker(worker_address(stack), viewer, [flaky])
    with pytest.raises(WorkerError) as refused:
        await asyncio.wait_for(worker.serve(), 15)
    assert refused.value.code == "PERMISSION_DENIED"
    assert "execute" in refused.value.message


async def test_the_worker_dials_until_the_cluster_is_there(sqlite_url: str) -> None:
    port = free_port()
    worker = Worker(f"127.0.0.1:{port}", "unused", [flaky], reconnect_max_s=0.5)
    task = asyncio.create_task(worker.serve())
    await asyncio.sleep(1.0)  # nothing listens yet: it backs off and dials again
    assert not task.done() and not worker.registered.is_set()
    running = await start_stack(
        # No keys: the stack's admin key is made at its start, after the worker's.
        {"database_url": sqlite_url, "worker_port": port, "auth_enabled": False, **FAST},
        ephemeral_ports=True,
    )
    try:
        await asyncio.wait_for(worker.registered.wait(), 15)
        assert worker.worker_id and worker.tenant_id == "default"
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await running.stop()


def spawn_worker(stack: Stack, *extra: str, capture: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "HEDDLE_API_KEY": stack.admin_key}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "heddle_sdk",
            "worker",
            str(Path(__file__).parent / "slow_nodes.py"),
            "--server",
            worker_address(stack),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def _connected(client: httpx.AsyncClient, node_type_name: str) -> bool:
    listing = (await client.get("/api/v1/node-types")).json()["node_types"]
    return any(t["type"] == node_type_name and t.get("connected") for t in listing)


async def test_sigterm_drains_a_worker_process(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    process = spawn_worker(stack, "--max-concurrency", "2", capture=True)
    lines: list[str] = []

    def read_output() -> None:
        assert process.stdout is not None
        lines.extend(iter(process.stdout.readline, ""))

    reader = asyncio.get_running_loop().run_in_executor(None, read_output)
    try:
        await assert_eventually(lambda: _connected(client, "acme.sleep"), timeout=20)
        workflow_id = await create_workflow(
            client,
            {
                "name": "sleeps",
                "inputs": {"starts": {"type": "string"}},
                "nodes": [
                    {
                        "id": "s",
                        "type": "acme.sleep",
                        "params": {"seconds": 1.5, "starts_file": "{{ inputs.starts }}"},
                    },
                ],
            },
        )
        first_starts, second_starts = tmp_path / "first", tmp_path / "second"
        first = await run(client, workflow_id, {"starts": str(first_starts)})
        await assert_eventually(first_starts.exists, timeout=10, message="never started")
        process.send_signal(signal.SIGTERM)
        await assert_eventually(
            lambda: any("draining" in line for line in lines), timeout=10, message=f"{lines}"
        )
        # A free slot, but the worker drains: it must not start this one.
        second = await run(client, workflow_id, {"starts": str(second_starts)})
        finished = await wait_final(client, first, timeout=20)
        assert finished["status"] == "succeeded"
        assert node(finished, "s")["output"] == {"slept": 1.5}
        code = await asyncio.to_thread(process.wait, 20)
        assert code == 0, "".join(lines)
        assert not second_starts.exists()
        later = (await client.get(f"/api/v1/executions/{second}")).json()
        assert later["status"] not in ("succeeded", "failed"), later
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await reader
        assert process.stdout is not None
        process.stdout.close()


async def test_kill_9_mid_attempt_is_retried_on_another_worker(
    stack: Stack, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    first = spawn_worker(stack, "--name", "first")
    second: subprocess.Popen[str] | None = None
    try:
        await assert_eventually(lambda: _connected(client, "acme.sleep"), timeout=20)
        workflow_id = await create_workflow(
            client,
            {
                "name": "survives",
                "nodes": [
                    {
                        "id": "s",
                        "type": "acme.sleep",
                        "params": {"seconds": 1.0, "starts_file": str(starts)},
                    }
                ],
            },
        )
        execution_id = await run(client, workflow_id)
        await assert_eventually(lambda: starts.exists(), timeout=10, message="never started")
        first.kill()  # SIGKILL: no drain, no goodbye
        first.wait()
        second = spawn_worker(stack, "--name", "second")
        execution = await wait_final(client, execution_id, timeout=40)
        assert execution["status"] == "succeeded", execution
        history = node(execution, "s")["attempt_history"]
        assert [a["status"] for a in history].count("succeeded") == 1, history
        assert starts.read_text().count("start") == 2
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def heddle_worker(*args: str) -> subprocess.Popen[str]:
    """`heddle worker slow_nodes.py ARGS` with no HEDDLE_API_KEY in its environment."""
    env = {k: v for k, v in os.environ.items() if k != "HEDDLE_API_KEY"}
    heddle = Path(sys.executable).parent / "heddle"
    module = str(Path(__file__).parent / "slow_nodes.py")
    return subprocess.Popen(
        [str(heddle), "worker", module, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_heddle_worker_takes_the_development_key_of_a_local_stack(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    process = heddle_worker("--server", worker_address(stack), "--gateway", stack.gateway_url)
    try:
        await assert_eventually(lambda: _connected(client, "acme.sleep"), timeout=20)
        process.send_signal(signal.SIGTERM)
        _, errors = await asyncio.to_thread(process.communicate, timeout=20)
        assert process.returncode == 0, errors
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    # No key and no local gateway to ask: a one-line error, exit 2.
    refused = heddle_worker("--server", "203.0.113.1:1")
    _, errors = await asyncio.to_thread(refused.communicate, timeout=60)
    assert refused.returncode == 2
    assert "API key" in errors


in_flight: list[int] = [0, 0]  # now, most at once
in_flight_lock = threading.Lock()


@node_type("acme.busy")
def busy(seconds: float) -> dict[str, Any]:
    """Blocks its thread (a plain def): the worker's heartbeats must go on meanwhile."""
    with in_flight_lock:
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
    try:
        time.sleep(seconds)
    finally:
        with in_flight_lock:
            in_flight[0] -= 1
    return {"slept": seconds}


async def test_slots_heartbeats_and_timeouts(stack: Stack, client: httpx.AsyncClient) -> None:
    in_flight[:] = [0, 0]
    cancelled.clear()
    worker = Worker(worker_address(stack), stack.admin_key, [busy, wait_forever], max_concurrency=2)
    async with serving(worker):
        # Five 2.5 s attempts on two slots, each longer than the 1.5 s heartbeat timeout: the
        # slots bound them, and the heartbeats keep the slow but healthy worker alive.
        workflow_id = await create_workflow(
            client,
            {
                "name": "busy",
                "nodes": [
                    {"id": f"b{i}", "type": "acme.busy", "params": {"seconds": 2.5}}
                    for i in range(5)
                ],
            },
        )
        execution = await wait_final(client, await run(client, workflow_id), timeout=60)
        assert execution["status"] == "succeeded", execution
        assert [n["attempts"] for n in execution["nodes"]] == [1] * 5
        assert in_flight[1] == 2

        # The node's timeout_s reaches the function: the attempt fails, the coroutine is
        # cancelled.
        timed_id = await create_workflow(
            client,
            {"name": "timed", "nodes": [{"id": "w", "type": "acme.wait", "timeout_s": 0.5}]},
        )
        timed = await wait_final(client, await run(client, timed_id), timeout=30)
        assert timed["status"] == "failed"
        assert "0.5" in node(timed, "w")["error"]["message"]
        await assert_eventually(lambda: cancelled == ["w"], timeout=10)


class CuttableProxy:
    """A TCP proxy to the worker endpoint whose connections the test can cut (a network
    outage between a worker and the cluster)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_lost_connection_is_dialled_again(stack: Stack, client: httpx.AsyncClient) -> None:
    proxy = CuttableProxy(stack.services["workflow"].workers.port)
    await proxy.start()
    worker = Worker(f"127.0.0.1:{proxy.port}", stack.admin_key, [flaky], reconnect_max_s=0.5)
    try:
        async with serving(worker) as task:
            first_id = worker.worker_id
            proxy.cut()
            await assert_eventually(
                lambda: worker.registered.is_set() and worker.worker_id not in ("", first_id),
                timeout=15,
                message="the worker did not register again",
            )
            assert not task.done()
            attempts_seen.clear()
            workflow_id = await create_workflow(
                client,
                {
                    "name": "after-outage",
                    "nodes": [{"id": "f", "type": "acme.flaky", "retry": {"max_attempts": 2}}],
                },
            )
            execution = await wait_final(client, await run(client, workflow_id))
            assert execution["status"] == "succeeded", execution
    finally:
        await proxy.stop()
