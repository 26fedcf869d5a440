"""CORS: a browser app on an allowed origin may call the API; every other origin may not.

The app is the real gateway application (its whole middleware stack); a preflight never
reaches a service, so the gRPC addresses point nowhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.clients import ServiceClients
from services.gateway.settings import GatewaySettings

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"


def _settings(tmp_path: Path, **overrides: object) -> GatewaySettings:
    nowhere = "127.0.0.1:9"
    return GatewaySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        workflow_address=nowhere,
        scheduler_address=nowhere,
        log_address=nowhere,
        ai_address=nowhere,
        tool_address=nowhere,
        node_addresses=[nowhere],
        **overrides,  # type: ignore[arg-type]
    )


async def _client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    clients = ServiceClients.connect(settings)
    app = create_app(settings, clients)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client
    await app.state.security.close()
    await clients.close()


@pytest.fixture
async def cors_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(tmp_path, cors_allow_origins=f"{ALLOWED}, https://other.example.org")
    async for client in _client(settings):
        yield client


@pytest.fixture
async def default_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(_settings(tmp_path)):
        yield client


def _preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type"):
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_preflight_from_an_allowed_origin_is_204_with_the_cors_headers(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.options("/api/v1/workflows", headers=_preflight(ALLOWED))
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == ALLOWED
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE"} <= methods
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert response.headers["access-control-max-age"] == "600"
    assert "origin" in response.headers["vary"].lower()
    # Credentials are not allowed unless the setting says so.
    assert "access-control-allow-credentials" not in response.headers


async def test_preflight_from_another_origin_is_refused(cors_client: httpx.AsyncClient) -> None:
    response = await cors_client.options("/api/v1/workflows", headers=_preflight(OTHER))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_preflight_for_a_header_not_allowed_is_refused(
    cors_client: httpx.AsyncClient,
) -> None:
    response = await cors_client.options(
        "/api/v1/workflows", headers=_preflight(ALLOWED, headers="x-secret-header")
    )
    assert response.status_code == 400


async def test_actual_request_carries_the_origin_and_exposes_the_request_id(
    cors_client: httpx.AsyncClient,
) -> None:
    # Even a refusal (no API key: 401) is readable by the allowed origin's script.
    response = await cors_client.get("/api/v1/workflows", headers={"Origin": ALLOWED})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
    other = await cors_client.get("/api/v1/workflows", headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in other.headers


async def test_no_cors_by_default(default_client: httpx.AsyncClient) -> None:
    response = await default_client.options("/api/v1/workflows", headers=_preflight(ALLOWED))
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers
    plain = await default_client.get("/healthz", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in plain.headers


async def test_credentials_echo_the_origin_even_when_any_origin_is_allowed(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, cors_allow_origins="*", cors_allow_credentials=True)
    async for client in _client(settings):
        response = await client.options("/api/v1/workflows", headers=_preflight(OTHER))
        assert response.status_code == 204
        # The Fetch standard forbids `*` together with credentials.
        assert response.headers["access-control-allow-origin"] == OTHER
        assert response.headers["access-control-allow-credentials"] == "true"
        simple = await client.get("/healthz", headers={"Origin": OTHER})
        assert simple.headers["access-control-allow-origin"] == OTHER
