"""Issue 12 acceptance, outage tests: during a Redis outage and a PostgreSQL outage every API
route answers 2xx (or a 4xx its request deserves) or 503 with Retry-After, never a 500;
/readyz is 503 naming the store while it is down and 200 after; afterwards a workflow runs to
completion with no restart.

The production topology (one workflow and one node replica, to stay small) runs on a PRIVATE
Redis and a PRIVATE PostgreSQL cluster that these tests stop and start: the machine's shared
servers serve other tests at the same time. Authentication is on, so the gateway's own
stores (API keys, rate limits) are in the path of every request.
"""

from __future__ import annotations

import contextlib
import json
import secrets as random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from libs.cli.topology import TopologyPorts, default_topology, spawn_topology
from libs.common.secrets import generate_key
from tests.e2e.conftest import (
    E2E,
    LEASE_TTL_S,
    RABBIT_URL,
    RECOVERY_INTERVAL_S,
    run_sync,
    wait_final,
)
from tests.helpers import assert_eventually
from tests.infra_fixtures import deployment_env
from tests.private_infra import PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.e2e

ADMIN_KEY = f"hk_{random.token_hex(6)}_{random.token_urlsafe(32)}"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}

HELLO: dict[str, Any] = {
    "name": "outage-hello",
    "inputs": {"name": {"type": "string", "required": False}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "Hello {{ inputs.name }}"}},
    ],
    "edges": [{"source": "start", "target": "greet"}],
}


@dataclass
class OutageStack:
    e2e: E2E
    redis: PrivateRedis
    postgres: PrivatePostgres


@pytest.fixture(scope="module")
def outage_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OutageStack]:
    redis = PrivateRedis()
    postgres = PrivatePostgres()
    try:
        run_sync(redis.start())
        run_sync(postgres.init())
        run_sync(postgres.start())
        specs = default_topology(
            ports=TopologyPorts.free(workflow_replicas=1, node_replicas=1),
            database_url=postgres.url,
            broker_url=RABBIT_URL,
            redis_url=redis.url,
            extra_env={
                "HEDDLE_LEASE_TTL_S": str(LEASE_TTL_S),
                "HEDDLE_RECOVERY_INTERVAL_S": str(RECOVERY_INTERVAL_S),
                "HEDDLE_LOG_LEVEL": "INFO",
                "HEDDLE_AUTH_ENABLED": "true",
                "HEDDLE_BOOTSTRAP_API_KEY": ADMIN_KEY,
                "HEDDLE_SECRETS_KEY": generate_key(),
                **deployment_env(),
            },
        )
        topology = spawn_topology(specs, tmp_path_factory.mktemp("outage-logs"))
        e2e = E2E(topology, "postgres", postgres.url, postgres.dsn)
        try:
            run_sync(topology.wait_healthy(timeout_s=90))
            yield OutageStack(e2e, redis, postgres)
        finally:
            failed = any(
                getattr(item, "_e2e_failed", False)
                for item in request.session.items
                if getattr(item, "module", None) is request.module
            )
            if failed:
                print(f"\n---------- logs of the topology of {__name__} ----------")
                print(e2e.logs())
            topology.stop(grace=10)
    finally:
        run_sync(postgres.remove())
        run_sync(redis.stop())


@contextlib.asynccontextmanager
async def api(stack: OutageStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.e2e.url, headers=AUTH, timeout=30) as client:
        yield client


@dataclass
class Objects:
    """What the calls need to exist (each deleting call has an object of its own)."""

    workflow_id: str
    doomed_workflow_id: str
    execution_id: str
    last_seq: int
    schedule_id: str
    doomed_schedule_id: str
    doomed_key_id: str
    ids: dict[str, str] = field(default_factory=dict)


async def _created(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code in (200, 201, 202), response.text
    return dict(response.json())


async def make_objects(client: httpx.AsyncClient) -> Objects:
    workflow_id = (await _created(client, "/api/v1/workflows", HELLO))["id"]
    doomed = (await _created(client, "/api/v1/workflows", {**HELLO, "name": "doomed"}))["id"]
    started = await _created(
        client, f"/api/v1/workflows/{workflow_id}/execute", {"inputs": {"name": "Ada"}}
    )
    execution = await wait_final(client, started["execution_id"], timeout=60)
    assert execution["status"] == "succeeded", execution
    schedule = {"workflow_id": workflow_id, "cron": "0 2 * * *", "timezone": "UTC"}
    schedule_id = (await _created(client, "/api/v1/schedules", {**schedule, "name": "a"}))["id"]
    doomed_schedule = (await _created(client, "/api/v1/schedules", {**schedule, "name": "b"}))["id"]
    key_id = (await _created(client, "/api/v1/api-keys", {"name": "doomed"}))["id"]
    await _created(client, "/api/v1/secrets", {"name": "OUTAGE_SECRET", "value": "x"})
    granted = await client.put(
        f"/api/v1/workflows/{workflow_id}/grants", json={"principal": "user:ada", "role": "viewer"}
    )
    assert granted.status_code == 200, granted.text
    return Objects(
        workflow_id=workflow_id,
        doomed_workflow_id=doomed,
        execution_id=execution["id"],
        last_seq=execution["last_seq"],
        schedule_id=schedule_id,
        doomed_schedule_id=doomed_schedule,
        doomed_key_id=key_id,
    )


class _PathValues(dict[str, str]):
    """Path parameters of the routes made above; any other (a version number, the id of an
    object this test did not make) gets a well-formed value: a 404 is in the contract too."""

    def __missing__(self, name: str) -> str:
        return "1" if name in ("version", "n", "number") else str(uuid.uuid4())


def _request_for(method: str, template: str, objects: Objects) -> dict[str, Any]:
    """A valid request (path, query, body, headers) for one operation of the OpenAPI doc."""
    doomed = method == "DELETE"
    values = {
        "workflow_id": objects.doomed_workflow_id
        if (method, template) == ("DELETE", "/api/v1/workflows/{workflow_id}")
        else objects.workflow_id,
        "execution_id": objects.execution_id,
        "schedule_id": objects.doomed_schedule_id if doomed else objects.schedule_id,
        "key_id": objects.doomed_key_id,
        "principal": "user:ada",
        "name": "OUTAGE_SECRET" if "/secrets/" in template else "outage-hook",
    }
    path = template.format_map(_PathValues(values))
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/api/v1/workflows/validate"): HELLO,
        ("POST", "/api/v1/workflows"): {**HELLO, "name": "during-outage"},
        ("PUT", "/api/v1/workflows/{workflow_id}"): HELLO,
        ("POST", "/api/v1/workflows/{workflow_id}/execute"): {"inputs": {"name": "Bo"}},
        ("PUT", "/api/v1/workflows/{workflow_id}/grants"): {
            "principal": "user:bo",
            "role": "viewer",
        },
        ("POST", "/api/v1/executions/{execution_id}/input"): {"node_id": "greet", "data": {}},
        ("POST", "/api/v1/schedules"): {
            "name": "c",
            "workflow_id": objects.workflow_id,
            "cron": "0 3 * * *",
            "timezone": "UTC",
        },
        ("PUT", "/api/v1/schedules/{schedule_id}"): {
            "name": "a",
            "workflow_id": objects.workflow_id,
            "cron": "0 4 * * *",
            "timezone": "UTC",
        },
        ("POST", "/api/v1/triggers/{name}"): {"payload": 1},
        ("POST", "/api/v1/api-keys"): {"name": "during-outage"},
        ("POST", "/api/v1/secrets"): {"name": "OTHER_SECRET", "value": "y"},
    }
    queries: dict[tuple[str, str], dict[str, str]] = {
        ("GET", "/api/v1/schedules/preview"): {"cron": "0 2 * * *"},
    }
    headers: dict[tuple[str, str], dict[str, str]] = {
        # Resume after the last event of a finished execution: a 204 when all is up.
        ("GET", "/api/v1/executions/{execution_id}/events"): {
            "Last-Event-ID": str(objects.last_seq)
        },
    }
    request: dict[str, Any] = {"method": method, "url": path}
    if (method, template) in bodies:
        request["json"] = bodies[(method, template)]
    elif method in ("POST", "PUT"):
        request["json"] = {}
    if (method, template) in queries:
        request["params"] = queries[(method, template)]
    if (method, template) in headers:
        request["headers"] = headers[(method, template)]
    return request


@dataclass
class Answer:
    method: str
    template: str
    status: int
    retry_after: str | None
    body: str

    def __str__(self) -> str:
        return f"{self.status} {self.method} {self.template}: {self.body[:300]}"


async def call_every_route(client: httpx.AsyncClient, objects: Objects) -> list[Answer]:
    spec = (await client.get("/openapi.json")).json()
    answers = []
    for template, operations in spec["paths"].items():
        for method in operations:
            request = _request_for(method.upper(), template, objects)
            async with client.stream(**request) as response:
                streaming = response.headers.get("content-type", "").startswith("text/event-stream")
                body = "" if streaming else (await response.aread()).decode(errors="replace")
            answers.append(
                Answer(
                    method.upper(),
                    template,
                    response.status_code,
                    response.headers.get("retry-after"),
                    body,
                )
            )
    return answers


def check_contract(answers: list[Answer]) -> None:
    """2xx, a 4xx, or 503 with Retry-After: never a 500 (nor any other 5xx)."""
    broken = [
        str(a) for a in answers if a.status >= 500 and not (a.status == 503 and a.retry_after)
    ]
    assert not broken, "answers outside the contract:\n" + "\n".join(broken)
    for answer in answers:
        if answer.status == 503 and answer.template != "/readyz":  # /readyz: its own report
            assert int(answer.retry_after or 0) >= 1, str(answer)
            assert json.loads(answer.body)["error"]["code"] == "unavailable", str(answer)


def by_route(answers: list[Answer]) -> dict[tuple[str, str], Answer]:
    return {(a.method, a.template): a for a in answers}


async def ws_close_code(stack: OutageStack, execution_id: str) -> int:
    url = stack.e2e.url.replace("http://", "ws://")
    async with connect(f"{url}/ws/v1/executions/{execution_id}?access_token={ADMIN_KEY}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def readiness(client: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status_code, response.json()


async def retried(call: Callable[[], Awaitable[httpx.Response]], expected: int) -> httpx.Response:
    """The response of call, made again while it answers 503 (as the contract tells a client
    to do: a connection pooled before the outage may fail once); anything else fails."""
    answered: list[httpx.Response] = []

    async def answer() -> bool:
        response = await call()
        assert response.status_code in (expected, 503), response.text
        answered[:] = [response]
        return response.status_code == expected

    await assert_eventually(answer, timeout=30, interval=0.2, message=f"no {expected}")
    return answered[0]


async def works_again(client: httpx.AsyncClient) -> None:
    """/readyz is 200, and a workflow is created and runs to completion."""

    async def ready() -> bool:
        return (await readiness(client))[0] == 200

    await assert_eventually(ready, timeout=30, interval=0.2, message="/readyz never 200 again")
    created = await retried(
        lambda: client.post("/api/v1/workflows", json={**HELLO, "name": "after"}), 201
    )
    workflow_id = created.json()["id"]
    started = await retried(
        lambda: client.post(
            f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": {"name": "Cy"}}
        ),
        202,
    )
    final = await wait_final(client, started.json()["execution_id"], timeout=60)
    assert final["status"] == "succeeded", final


async def test_redis_outage(outage_stack: OutageStack) -> None:
    stack = outage_stack
    async with api(stack) as client:
        objects = await make_objects(client)
        await stack.redis.stop()
        try:
            answers = await call_every_route(client, objects)
            status, report = await readiness(client)
            healthz = (await client.get("/healthz")).status_code
        finally:
            await stack.redis.start()
        print("\n".join(map(str, answers)))
        check_contract(answers)
        # Rate limits fail open by default: the API itself kept serving.
        routes = by_route(answers)
        assert routes[("GET", "/api/v1/workflows")].status == 200
        assert routes[("GET", "/api/v1/executions/{execution_id}")].status == 200
        assert status == 503, report
        assert report["dependencies"]["redis"] == {"status": "down", "required": True}
        assert healthz == 200
        await works_again(client)
    stack.e2e.assert_no_crash()


async def test_postgres_outage(outage_stack: OutageStack) -> None:
    stack = outage_stack
    async with api(stack) as client:
        objects = await make_objects(client)
        await stack.postgres.stop()
        try:
            answers = await call_every_route(client, objects)
            status, report = await readiness(client)
            healthz = (await client.get("/healthz")).status_code
            websocket_code = await ws_close_code(stack, objects.execution_id)
        finally:
            await stack.postgres.start()
        print("\n".join(map(str, answers)))
        check_contract(answers)
        routes = by_route(answers)
        # The outage was real: what needs the database answered 503.
        for route in (
            ("GET", "/api/v1/workflows"),
            ("GET", "/api/v1/executions/{execution_id}"),
            ("GET", "/api/v1/executions/{execution_id}/events"),
            ("GET", "/api/v1/api-keys"),
            ("POST", "/api/v1/workflows"),
        ):
            assert routes[route].status == 503, str(routes[route])
        assert status == 503, report
        assert report["dependencies"]["database"] == {"status": "down", "required": True}
        assert healthz == 200
        assert websocket_code == 4503
        await works_again(client)
    stack.e2e.assert_no_crash()
