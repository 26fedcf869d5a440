"""Issue 12 item 3: the gateway's own stores down (Redis for rate limits, the database for API
keys) give 503 with Retry-After, never 500; /readyz names the store; all recovers by itself.

The gateway runs on a real uvicorn over the fake services, with a private Redis and a private
PostgreSQL cluster that these tests stop and start (never the machine's shared servers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from libs.cli.topology import free_port
from services.gateway import repository as repo
from services.gateway.clients import ServiceClients
from services.gateway.server import GatewayServer
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import start_execution
from tests.helpers import assert_eventually
from tests.private_infra import PrivatePostgres, PrivateRedis

# Private Redis and PostgreSQL instances, stopped and started by the tests.
pytestmark = pytest.mark.integration

ADMIN_KEY = "hk_0123456789ab_" + "s" * 40


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _gateway(
    settings: GatewaySettings, clients: ServiceClients, **overrides: Any
) -> tuple[GatewayServer, str]:
    options: dict[str, Any] = {"auth_enabled": True, "bootstrap_api_key": ADMIN_KEY}
    options.update(overrides)
    server = GatewayServer(settings.model_copy(update=options), clients)
    port = await server.start()
    return server, f"127.0.0.1:{port}"


def _unchecked(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "heddle_gateway_rate_limit_unchecked_total", {"outcome": outcome}
    )
    return value or 0.0


def _assert_unavailable(response: httpx.Response, dependency: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "unavailable", error
    assert error["details"]["dependency"] == dependency, error


async def _ws_close_code(address: str, execution_id: str) -> int:
    url = f"ws://{address}/ws/v1/executions/{execution_id}?access_token={ADMIN_KEY}"
    async with connect(url) as websocket:
        frame = await websocket.recv()
        assert "error" in str(frame), frame
        with pytest.raises(ConnectionClosed) as closed:
            await websocket.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_redis_down_fails_open_by_default(
    settings: GatewaySettings, clients: ServiceClients, private_redis: PrivateRedis
) -> None:
    """Served without rate limits (and counted) while Redis is down; /readyz says so."""
    server, address = await _gateway(
        settings,
        clients,
        redis_url=private_redis.url,
        rate_limit_per_s=0.001,
        rate_limit_burst=2,
    )
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}", headers=headers) as http:
            assert [(await http.get("/api/v1/workflows")).status_code for _ in range(3)] == [
                200,
                200,
                429,
            ]
            await private_redis.stop()
            served_before = _unchecked("served")
            during = [await http.get("/api/v1/workflows") for _ in range(5)]
            assert [r.status_code for r in during] == [200] * 5, during[-1].text
            assert _unchecked("served") - served_before == 5
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["retry-after"]
            assert ready.json()["dependencies"]["redis"] == {"status": "down", "required": True}
            assert (await http.get("/healthz")).status_code == 200

            await private_redis.start()  # empty again: the bucket starts full

            async def limits_apply_again() -> bool:
                return (await http.get("/api/v1/workflows")).status_code == 429

            await assert_eventually(
                limits_apply_again, timeout=15, interval=0.2, message="no 429 after Redis is back"
            )
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await server.stop()


async def test_redis_down_fail_closed_is_503_everywhere(
    settings: GatewaySettings, clients: ServiceClients, private_redis: PrivateRedis
) -> None:
    server, address = await _gateway(
        settings, clients, redis_url=private_redis.url, rate_limit_failure_mode="closed"
    )
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}", headers=headers) as http:
            execution_id = await start_execution(http)
            await private_redis.stop()
            refused_before = _unchecked("refused")
            _assert_unavailable(await http.get("/api/v1/workflows"), "rate-limit store")
            _assert_unavailable(
                await http.post("/api/v1/workflows/validate", json={"nodes": []}),
                "rate-limit store",
            )
            _assert_unavailable(
                await http.get(f"/api/v1/executions/{execution_id}/events"), "rate-limit store"
            )
            assert _unchecked("refused") - refused_before == 3
            assert await _ws_close_code(address, execution_id) == 4503

            await private_redis.start()

            async def served() -> bool:
                return (await http.get("/api/v1/workflows")).status_code == 200

            await assert_eventually(served, timeout=15, interval=0.2, message="still refused")
            events = await http.get(f"/api/v1/executions/{execution_id}/events")
            assert events.status_code == 200
    finally:
        await server.stop()


async def test_database_down_is_503_and_verified_keys_are_remembered(
    settings: GatewaySettings, clients: ServiceClients
) -> None:
    """With the gateway's database down: a key verified a moment ago still works (the
    services behind answer), an unknown one is a 503 naming the database (never a 500),
    /readyz is 503; once the database is back everything works without a restart."""
    postgres = PrivatePostgres()
    try:
        await postgres.init()
        await postgres.start()
        await _database_outage(settings, clients, postgres)
    finally:
        await postgres.remove()


async def _database_outage(
    settings: GatewaySettings, clients: ServiceClients, postgres: PrivatePostgres
) -> None:
    server, address = await _gateway(settings, clients, database_url=postgres.url)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}", headers=admin) as http:
            created = await http.post("/api/v1/api-keys", json={"name": "ci", "scopes": ["read"]})
            assert created.status_code == 201, created.text
            other_key = created.json()["key"]
            execution_id = await start_execution(http)
            assert (await http.get("/readyz")).status_code == 200

            await postgres.stop()
            # Verified a moment ago: no database read needed.
            assert (await http.get("/api/v1/workflows")).status_code == 200
            # Never verified by this gateway: its row cannot be read.
            unknown = {"Authorization": f"Bearer {other_key}"}
            _assert_unavailable(await http.get("/api/v1/workflows", headers=unknown), "database")
            _assert_unavailable(
                await http.get(f"/api/v1/executions/{execution_id}/events", headers=unknown),
                "database",
            )
            # Routes that read the gateway's own tables.
            _assert_unavailable(await http.get("/api/v1/api-keys"), "database")
            _assert_unavailable(await http.get("/api/v1/audit"), "database")
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["dependencies"]["database"] == {"status": "down", "required": True}
            url = f"ws://{address}/ws/v1/executions/{execution_id}?access_token={other_key}"
            async with connect(url) as websocket:
                await websocket.recv()
                with pytest.raises(ConnectionClosed) as closed:
                    await websocket.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4503

            await postgres.start()

            async def answers() -> bool:
                response = await http.get("/api/v1/workflows", headers=unknown)
                assert response.status_code in (200, 503), response.text
                return response.status_code == 200

            await assert_eventually(answers, timeout=20, interval=0.2, message="still 503")
            assert (await http.get("/api/v1/api-keys")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
    finally:
        await server.stop()


async def test_revocation_takes_effect_through_the_key_cache(
    settings: GatewaySettings, clients: ServiceClients, tmp_path: Path
) -> None:
    """Revoked through this gateway: refused at once. Revoked elsewhere (another replica,
    here straight in the database): refused once the cache entry is older than its TTL."""
    database = tmp_path / "gateway.db"
    server, address = await _gateway(
        settings,
        clients,
        database_url=f"sqlite+aiosqlite:///{database}",
        api_key_cache_ttl_s=0.5,
    )
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://{address}", headers=admin) as http:
            keys = []
            for name in ("here", "elsewhere"):
                created = await http.post("/api/v1/api-keys", json={"name": name})
                assert created.status_code == 201, created.text
                keys.append(created.json())
            here, elsewhere = keys
            for key in keys:  # verified, so remembered
                response = await http.get(
                    "/api/v1/workflows", headers={"Authorization": f"Bearer {key['key']}"}
                )
                assert response.status_code == 200

            assert (await http.delete(f"/api/v1/api-keys/{here['id']}")).status_code == 204
            refused = await http.get(
                "/api/v1/workflows", headers={"Authorization": f"Bearer {here['key']}"}
            )
            assert refused.status_code == 401
            assert refused.json()["error"]["message"] == "API key revoked"

            security = server.app.state.security
            async with security.db.transaction() as session:
                row = await repo.get_api_key(session, "default", elsewhere["id"])
                assert row is not None
                row.revoked_at = dt.datetime.now(dt.UTC)

            async def refused_elsewhere() -> bool:
                response = await http.get(
                    "/api/v1/workflows", headers={"Authorization": f"Bearer {elsewhere['key']}"}
                )
                assert response.status_code in (200, 401), response.text
                return response.status_code == 401

            await assert_eventually(
                refused_elsewhere, timeout=10, interval=0.1, message="revoked key still accepted"
            )
    finally:
        await server.stop()


async def test_unreachable_database_at_first_use_is_503(
    settings: GatewaySettings, clients: ServiceClients
) -> None:
    """A gateway whose database has never been reachable: 503 naming it, not 500."""
    with_auth = settings.model_copy(
        update={
            "auth_enabled": True,
            "database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x",
        }
    )
    server = GatewayServer(with_auth, clients)
    port = await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as http:
            _assert_unavailable(await http.get("/api/v1/workflows"), "database")
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["dependencies"]["database"]["status"] == "down"
    finally:
        await server.stop()
