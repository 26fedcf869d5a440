"""Schemathesis over the gateway's own OpenAPI schema, authenticated as a tenant admin: no
5xx for anything a client can send, and every response matches the documented schema.

The stack (and its gateway) runs in this process and this event loop; the fuzzer runs in a
worker thread and talks to the gateway over loopback HTTP, because the gRPC channels behind
the app belong to this loop (an ASGI transport would drive the app from another loop).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from libs.cli.stack import Stack

MAX_EXAMPLES = 15

pytestmark = pytest.mark.parametrize(
    "stack", [{"rate_limit_burst": 100_000, "rate_limit_per_s": 10_000}], indirect=True
)


def _fuzz(raw_schema: dict[str, Any], base_url: str, token: str) -> tuple[list[str], int, int]:
    """(failures, operations fuzzed, requests sent)."""
    schema = schemathesis.openapi.from_dict(raw_schema)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in ("/metrics",):
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

        try:
            check()
        except Exception as error:
            failures.append(f"{operation.method.upper()} {operation.path}: {error}"[:2000])
    return failures, operations, calls


async def test_no_server_errors_and_no_schema_violations(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    raw = (await client.get("/openapi.json")).json()
    failures, operations, calls = await asyncio.to_thread(
        _fuzz, raw, stack.gateway_url, stack.admin_key
    )
    assert not failures, "\n\n".join(failures)
    assert operations >= 35 and calls >= operations * 5, (operations, calls)
