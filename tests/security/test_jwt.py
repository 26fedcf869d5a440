"""JWT bearer tokens: issuer, audience, expiry and algorithm checked; tenant and roles from
claims; the subject is the principal that roles are granted to."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from libs.cli.stack import Stack
from tests.security.support import HELLO, bearer

SECRET = "hs256-test-secret-of-enough-length-0123456789"
JWT_SETTINGS = {"jwt_hs256_secret": SECRET, "jwt_issuer": "https://idp", "jwt_audience": "heddle"}

pytestmark = pytest.mark.parametrize("stack", [JWT_SETTINGS], indirect=True)


def token(**overrides: Any) -> str:
    claims = {
        "iss": "https://idp",
        "aud": "heddle",
        "sub": "ada",
        "tenant": "acme",
        "exp": int(time.time()) + 300,
        **overrides,
    }
    key = overrides.pop("_key", SECRET)
    claims.pop("_key", None)
    return jwt.encode(claims, key, algorithm="HS256")


async def test_jwt_principals(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as http:
        admin = bearer(token(sub="root", roles=["admin"]))
        created = await http.post("/api/v1/workflows", json=HELLO, headers=admin)
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]

        ada = bearer(token())
        assert (await http.get(f"/api/v1/workflows/{workflow_id}", headers=ada)).status_code == 404
        granted = await http.put(
            f"/api/v1/workflows/{workflow_id}/grants",
            json={"principal": "user:ada", "role": "viewer"},
            headers=admin,
        )
        assert granted.status_code == 200
        assert (await http.get(f"/api/v1/workflows/{workflow_id}", headers=ada)).status_code == 200
        refused = await http.post(f"/api/v1/workflows/{workflow_id}/execute", headers=ada, json={})
        assert refused.status_code == 403

        # Another tenant's admin by claim sees nothing of acme's.
        other = bearer(token(sub="eve", tenant="globex", roles="admin"))
        assert (
            await http.get(f"/api/v1/workflows/{workflow_id}", headers=other)
        ).status_code == 404

        for bad in (
            token(exp=int(time.time()) - 120),
            token(aud="someone-else"),
            token(iss="https://evil"),
            token(_key="not-the-secret-not-the-secret-0123456789"),
            jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none"),  # type: ignore[arg-type]  # unsigned on purpose
        ):
            response = await http.get("/api/v1/workflows", headers=bearer(bad))
            assert response.status_code == 401, bad
