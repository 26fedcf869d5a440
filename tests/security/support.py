"""Helpers of the security tests: principals of every kind on a running embedded stack."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import httpx

from libs.cli.stack import Stack
from services.gateway.auth import ADMIN_SCOPES, DEFAULT_SCOPES, Security

SECRET_WORKFLOW_NAME = "very-private-workflow-name"

HELLO = {
    "name": SECRET_WORKFLOW_NAME,
    "inputs": {"name": {"type": "string", "default": "world"}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "Hello {{ inputs.name }}!"}},
    ],
    "edges": [{"source": "start", "target": "greet"}],
}


def security_of(stack: Stack) -> Security:
    security: Security = stack.services["gateway"].app.state.security
    return security


async def new_key(
    stack: Stack,
    *,
    tenant: str = "default",
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    expires_at: dt.datetime | None = None,
    name: str = "test",
) -> tuple[str, str]:
    """(token, principal id) of a new API key made directly in the gateway's store."""
    row, token = await security_of(stack).create_api_key(
        tenant_id=tenant, name=name, scopes=scopes, expires_at=expires_at, created_by="test"
    )
    return token, f"key:{row.id}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Principals:
    """Tokens by principal name; `roles` maps a role to its key's principal id."""

    tokens: dict[str, str | None] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)


ROLE_NAMES = ("owner", "editor", "executor", "viewer")


async def principals(stack: Stack) -> Principals:
    result = Principals()
    result.tokens["none"] = None
    result.tokens["bad"] = "hk_0123456789ab_" + "x" * 43
    expired, _ = await new_key(
        stack, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), name="expired"
    )
    result.tokens["expired"] = expired
    other, _ = await new_key(stack, tenant="other", scopes=ADMIN_SCOPES, name="other admin")
    result.tokens["other_tenant"] = other
    for role in (*ROLE_NAMES, "member"):
        token, principal = await new_key(stack, name=role)
        result.tokens[role] = token
        result.ids[role] = principal
    result.tokens["admin"] = stack.admin_key
    return result


async def create_workflow(
    client: httpx.AsyncClient, definition: dict[str, Any] | None = None
) -> str:
    response = await client.post("/api/v1/workflows", json=definition or HELLO)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def grant_roles(client: httpx.AsyncClient, workflow_id: str, ids: dict[str, str]) -> None:
    for role in ROLE_NAMES:
        response = await client.put(
            f"/api/v1/workflows/{workflow_id}/grants",
            json={"principal": ids[role], "role": role},
        )
        assert response.status_code == 200, response.text


async def wait_final(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    """Follow the SSE stream to its end, then read the execution."""
    async with client.stream("GET", f"/api/v1/executions/{execution_id}/events") as stream:
        async for _ in stream.aiter_lines():
            pass
    response = await client.get(f"/api/v1/executions/{execution_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())
