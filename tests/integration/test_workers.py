"""Workers serving custom node types, on the embedded stack (issue #14, the cluster side):
registration and its refusals, the catalog per tenant, validation, runs, queueing with the
schedule-to-start timeout, lost, silent, slow and draining workers, cancellation, timeouts.

The worker is tests/worker_stub.py, written against worker.proto alone.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from heddle.v1 import worker_pb2
from prometheus_client import REGISTRY

from libs.cli.stack import Stack, start_stack
from tests.helpers import assert_eventually
from tests.integration.helpers import (
    create_workflow,
    events,
    get_execution,
    node,
    run,
    wait_final,
)
from tests.worker_stub import StubWorker, declared


@pytest.fixture
async def stack(sqlite_url: str) -> AsyncIterator[Stack]:
    running = await start_stack(
        {
            "database_url": sqlite_url,
            "http_allow_hosts": ["127.0.0.1"],
            "worker_port": 0,
            "worker_heartbeat_interval_s": 0.2,
            "worker_heartbeat_timeout_s": 2.0,
            "worker_presence_refresh_s": 0.2,
        },
        ephemeral_ports=True,
    )
    try:
        yield running
    finally:
        await running.stop()


def worker_address(stack: Stack) -> str:
    return f"127.0.0.1:{stack.services['workflow'].workers.port}"


async def start_worker(
    stack: Stack, names: list[str] | None = None, key: str | None = None, **options: Any
) -> StubWorker:
    types = [declared(name) for name in names or ["acme.upper", "acme.concat"]]
    worker = StubWorker(
        worker_address(stack), stack.admin_key if key is None else key, types, **options
    )
    await worker.start()
    return worker


async def api_key(stack: Stack, tenant: str, scopes: list[str]) -> str:
    security = stack.services["gateway"].app.state.security
    _, token = await security.create_api_key(
        tenant_id=tenant, name="test", scopes=scopes, expires_at=None, created_by="test"
    )
    return str(token)


def custom_types(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["type"]: t for t in listing["node_types"] if t["source"] == "worker"}


def queued(node_type: str, tenant: str = "default") -> float:
    value = REGISTRY.get_sample_value(
        "heddle_worker_queued_attempts", {"tenant": tenant, "node_type": node_type}
    )
    return value or 0.0


UPPER_THEN_CONCAT = {
    "name": "upper-then-concat",
    "inputs": {"who": {"type": "string"}},
    "nodes": [
        {"id": "a", "type": "acme.upper", "params": {"text": "hello {{ inputs.who }}"}},
        {"id": "b", "type": "acme.upper", "params": {"text": "bye"}},
        {"id": "joined", "type": "acme.concat"},
    ],
    "edges": [
        {"source": "a", "target": "joined", "target_port": "items"},
        {"source": "b", "target": "joined", "target_port": "items"},
    ],
}


def slow(seconds: float, **node: Any) -> dict[str, Any]:
    return {
        "name": "slow",
        "nodes": [{"id": "s", "type": "acme.slow", "params": {"seconds": seconds}, **node}],
        "edges": [],
    }


async def test_registered_types_are_listed_validated_and_run(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    worker = await start_worker(stack)
    listing = (await client.get("/api/v1/node-types")).json()
    types = custom_types(listing)
    assert set(types) == {"acme.upper", "acme.concat"}
    upper = types["acme.upper"]
    assert upper["connected"] is True
    assert upper["category"] == "text"
    assert upper["title"] == "Upper-case"
    assert upper["params_schema"]["properties"]["text"] == {"type": "string"}
    assert types["acme.concat"]["list_input_ports"] == ["items"]
    builtins = [t for t in listing["node_types"] if t["source"] == "builtin"]
    assert builtins and all(t["connected"] for t in builtins)

    workflow_id = await create_workflow(client, UPPER_THEN_CONCAT)
    execution = await wait_final(client, await run(client, workflow_id, {"who": "bob"}))
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "a")["output"] == {"text": "HELLO BOB", "worker": "stub"}
    assert node(execution, "joined")["output"] == {"joined": "HELLO BOBBYE"}
    # The worker got rendered params and its list port in edge order, with idempotency keys
    # and the attempt's trace context.
    attempt = next(a for a in worker.attempts if a.node_id == "a")
    assert json.loads(attempt.params_json) == {"text": "hello bob"}
    assert attempt.idempotency_key and attempt.traceparent
    joined = next(a for a in worker.attempts if a.node_id == "joined")
    assert json.loads(joined.inputs_json)["items"][0] == {"text": "HELLO BOB", "worker": "stub"}
    # What the worker logged is in the run's logs.
    stream = await events(client, execution["id"])
    logs = [e for e in stream if e["type"] == "log" and e.get("node_id") == "a"]
    assert any("upper-casing 9 characters" in e["data"]["message"] for e in logs), logs

    await worker.stop()

    async def disconnected() -> bool:
        listed = custom_types((await client.get("/api/v1/node-types")).json())
        return listed["acme.upper"]["connected"] is False

    await assert_eventually(disconnected, timeout=10, message="the type still shows connected")


async def _refusal(stack: Stack, types: list[worker_pb2.CustomNodeType], key: str) -> Any:
    worker = StubWorker(worker_address(stack), key, types)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await worker.start()
    await worker.stop()
    return refused.value


async def test_bad_registrations_get_a_clear_error(stack: Stack) -> None:
    key = stack.admin_key
    bad_schema = declared(
        "acme.upper", params_schema_json=b'{"type": "object", "properties": {"x": {"type": 12}}}'
    )
    error = await _refusal(stack, [bad_schema], key)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'acme.upper'" in error.details() and "not a valid JSON Schema" in error.details()

    not_json = declared("acme.upper", output_schema_json=b"{nope")
    error = await _refusal(stack, [not_json], key)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_schema is not JSON" in error.details()

    builtin = worker_pb2.CustomNodeType(type="http_request", title="mine")
    error = await _refusal(stack, [builtin], key)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'http_request' is the name of a built-in node type" in error.details()

    # The same type and version with another schema: refused; a new version is accepted.
    first = await start_worker(stack, ["acme.upper"])
    changed = declared("acme.upper", params_schema_json=b'{"type": "object"}')
    error = await _refusal(stack, [changed], key)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "'acme.upper' version '1' is already registered with a different schema" in (
        error.details()
    )
    changed.version = "2"
    second = StubWorker(worker_address(stack), key, [changed])
    await second.start()
    await second.stop()
    await first.stop()


async def test_a_worker_needs_a_key_with_the_execute_scope(stack: Stack) -> None:
    types = [declared("acme.upper")]
    error = await _refusal(stack, types, "")
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await _refusal(stack, types, "hk_0123456789ab_" + "x" * 40)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    viewer = await api_key(stack, "default", ["read"])
    error = await _refusal(stack, types, viewer)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "execute" in error.details() and "403" in error.details()
    executor = await api_key(stack, "default", ["read", "execute"])
    worker = StubWorker(worker_address(stack), executor, types)
    assert (await worker.start()).tenant_id == "default"
    await worker.stop()


async def test_tenants_do_not_see_validate_or_run_each_others_types(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    worker = await start_worker(stack)
    b_key = await api_key(stack, "tenant-b", ["read", "write", "execute", "admin"])
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {b_key}"}, timeout=30
    ) as b_client:
        assert custom_types((await b_client.get("/api/v1/node-types")).json()) == {}
        checked = await b_client.post("/api/v1/workflows/validate", json=UPPER_THEN_CONCAT)
        assert checked.status_code == 200, checked.text
        report = checked.json()
        assert report["valid"] is False
        assert any("acme.upper" in issue["message"] for issue in report["issues"]), report
        created = await b_client.post("/api/v1/workflows", json=UPPER_THEN_CONCAT)
        assert created.status_code == 422, created.text
        # B may register a type of the same name: its own, with its own schema.
        b_upper = declared("acme.upper", params_schema_json=b'{"type": "object"}')
        b_worker = StubWorker(worker_address(stack), b_key, [b_upper], name="b-worker")
        assert (await b_worker.start()).tenant_id == "tenant-b"
        listed = custom_types((await b_client.get("/api/v1/node-types")).json())
        assert set(listed) == {"acme.upper"}
        assert "text" not in listed["acme.upper"]["params_schema"]["properties"]
        b_workflow = {
            "name": "b",
            "nodes": [{"id": "a", "type": "acme.upper", "params": {"text": "b"}}],
            "edges": [],
        }
        b_id = await create_workflow(b_client, b_workflow)
        execution = await wait_final(b_client, await run(b_client, b_id))
        assert node(execution, "a")["output"]["worker"] == "b-worker"
        await b_worker.stop()
    # A's attempts never reached B's worker, nor B's A's.
    a_id = await create_workflow(client, UPPER_THEN_CONCAT)
    execution = await wait_final(client, await run(client, a_id, {"who": "a"}))
    assert node(execution, "a")["output"]["worker"] == "stub"
    assert all(attempt.tenant_id == "default" for attempt in worker.attempts)
    await worker.stop()


async def test_params_breaking_the_schema_fail_validation_with_a_located_error(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    worker = await start_worker(stack)
    definition = {
        "name": "bad-params",
        "nodes": [{"id": "up", "type": "acme.upper", "params": {"text": 5}}],
        "edges": [],
    }
    response = await client.post("/api/v1/workflows", json=definition)
    assert response.status_code == 422, response.text
    report = (await client.post("/api/v1/workflows/validate", json=definition)).json()
    located = [e for e in report["issues"] if e.get("node_id") == "up"]
    assert [e["message"] for e in located] == ["nodes[0].params.text: 5 is not of type 'string'"]
    missing = {**definition, "nodes": [{"id": "up", "type": "acme.upper", "params": {}}]}
    report = (await client.post("/api/v1/workflows/validate", json=missing)).json()
    assert any("'text' is a required property" in e["message"] for e in report["issues"])
    await worker.stop()


async def test_a_type_without_worker_is_queued_then_fails_naming_the_type(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    worker = await start_worker(stack, ["acme.slow"])
    await worker.stop()  # registered, now nobody serves it
    workflow_id = await create_workflow(
        client, slow(0.01, params={"seconds": 0.01, "schedule_to_start_timeout_s": 1.0})
    )
    execution_id = await run(client, workflow_id)
    await assert_eventually(lambda: queued("acme.slow") == 1, timeout=10)
    execution = await wait_final(client, execution_id)
    assert execution["status"] == "failed"
    error = node(execution, "s")["error"]
    assert error["type"] == "ScheduleToStartTimeout"
    assert "'acme.slow'" in error["message"] and "1 s" in error["message"]
    assert queued("acme.slow") == 0


async def test_a_queued_attempt_runs_when_a_worker_connects(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    worker = await start_worker(stack, ["acme.slow"])
    await worker.stop()
    workflow_id = await create_workflow(client, slow(0.01))
    execution_id = await run(client, workflow_id)
    await assert_eventually(lambda: queued("acme.slow") == 1, timeout=10)

    async def node_queued() -> bool:
        return node(await get_execution(client, execution_id), "s")["status"] == "queued"

    await assert_eventually(node_queued, timeout=10, message="the node never showed queued")
    late = await start_worker(stack, ["acme.slow"], name="late")
    execution = await wait_final(client, execution_id)
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "s")["output"]["worker"] == "late"
    assert queued("acme.slow") == 0
    stream = await events(client, execution_id)
    kinds = [e["type"] for e in stream if e.get("node_id") == "s"]
    assert kinds == ["node.started", "node.queued", "node.assigned", "node.completed"], kinds
    queued_event = next(e for e in stream if e["type"] == "node.queued")
    assert queued_event["data"]["reason"] == "no worker serving 'acme.slow' is connected"
    await late.stop()


def _attempt_statuses(execution: dict[str, Any], node_id: str) -> list[str]:
    """The status of every attempt of a node (its history ends with the last one)."""
    return [a["status"] for a in node(execution, node_id)["attempt_history"]]


async def test_a_lost_worker_attempt_is_retried_on_another_worker(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    first = await start_worker(stack, ["acme.slow"], name="first")
    workflow_id = await create_workflow(client, slow(1.0))
    execution_id = await run(client, workflow_id)
    await assert_eventually(lambda: first.running() == 1, timeout=10)
    second = await start_worker(stack, ["acme.slow"], name="second")
    await first.stop()  # the connection drops mid-attempt, no outcome
    execution = await wait_final(client, execution_id)
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "s")["output"]["worker"] == "second"
    assert _attempt_statuses(execution, "s") == ["failed", "succeeded"]
    # The re-sent attempt kept the idempotency key: the outcome of the first is unknown.
    assert first.attempts[0].idempotency_key == second.attempts[0].idempotency_key
    await second.stop()


async def test_a_silent_worker_is_dead_but_a_slow_heartbeating_one_is_not(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    # Slower than the heartbeat timeout (2 s) but heartbeating: not killed.
    steady = await start_worker(stack, ["acme.slow"], name="steady")
    workflow_id = await create_workflow(client, slow(4.0))
    execution = await wait_final(client, await run(client, workflow_id))
    assert execution["status"] == "succeeded", execution["error"]
    assert len(steady.attempts) == 1
    await steady.stop()
    # Connected but silent (a hung process): its attempt goes to another worker.
    silent = await start_worker(stack, ["acme.slow"], name="silent", heartbeats=False)
    execution_id = await run(client, workflow_id)
    await assert_eventually(lambda: silent.running() == 1, timeout=10)
    other = await start_worker(stack, ["acme.slow"], name="other")
    execution = await wait_final(client, execution_id, timeout=30)
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "s")["output"]["worker"] == "other"
    await assert_eventually(lambda: silent.closed.is_set(), timeout=5)
    await silent.stop()
    await other.stop()


async def test_a_draining_worker_finishes_its_work_and_takes_no_more(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    draining = await start_worker(stack, ["acme.slow"], name="draining")
    workflow_id = await create_workflow(client, slow(1.0))
    in_flight = await run(client, workflow_id)
    await assert_eventually(lambda: draining.running() == 1, timeout=10)
    drained = asyncio.create_task(draining.drain())
    await assert_eventually(
        lambda: not stack.services["workflow"].workers.pool.serves("default", "acme.slow"),
        timeout=5,
    )
    later = await run(client, workflow_id)
    fresh = await start_worker(stack, ["acme.slow"], name="fresh")
    first = await wait_final(client, in_flight)
    assert first["status"] == "succeeded", first["error"]
    assert node(first, "s")["output"]["worker"] == "draining"
    second = await wait_final(client, later)
    assert node(second, "s")["output"]["worker"] == "fresh"
    await drained
    assert len(draining.attempts) == 1
    await fresh.stop()


async def test_cancel_reaches_the_worker_and_timeouts_hold(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    worker = await start_worker(stack, ["acme.slow"])
    workflow_id = await create_workflow(client, slow(30))
    execution_id = await run(client, workflow_id)
    await assert_eventually(lambda: worker.running() == 1, timeout=10)
    response = await client.post(f"/api/v1/executions/{execution_id}/cancel")
    assert response.status_code in (200, 202), response.text
    await assert_eventually(lambda: worker.running() == 0, timeout=10)
    assert [(ref.node_id, ref.attempt) for ref in worker.cancelled] == [("s", 1)]
    assert (await wait_final(client, execution_id))["status"] == "cancelled"
    await worker.stop()


async def test_cache_keys_include_the_custom_types_version(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    first = await start_worker(stack, ["acme.upper"], name="v1")
    cached = {
        "name": "cached",
        "nodes": [
            {"id": "up", "type": "acme.upper", "params": {"text": "x"}, "cache": {"ttl_s": 600}}
        ],
        "edges": [],
    }
    workflow_id = await create_workflow(client, cached)
    one = await wait_final(client, await run(client, workflow_id))
    two = await wait_final(client, await run(client, workflow_id))
    assert [node(one, "up")["status"], node(two, "up")["status"]] == ["succeeded", "cached"]
    assert len(first.attempts) == 1
    await first.stop()
    # Version 2 of the type: the cached result of version 1 is not reused.
    second = StubWorker(
        worker_address(stack), stack.admin_key, [declared("acme.upper", version="2")], name="v2"
    )
    await second.start()
    three = await wait_final(client, await run(client, workflow_id))
    assert node(three, "up")["status"] == "succeeded"
    assert node(three, "up")["output"]["worker"] == "v2"
    assert len(second.attempts) == 1
    await second.stop()
