"""Integers beyond 64 bits (JSON has no limit) travel exactly through every hop: a node's
output, the next node's inputs, the execution's inputs and outputs, the stored rows (SQLite
and PostgreSQL) and the event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from libs.cli.stack import start_stack
from tests.integration.helpers import create_workflow, events, node, run, wait_final

BIG = 2**64
HUGE = 2**100
NEGATIVE = -(2**63) - 1


@pytest.fixture
async def any_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an embedded stack on SQLite, then on the real PostgreSQL."""
    running = await start_stack(
        {"database_url": database_url, "http_allow_hosts": ["127.0.0.1"]}, ephemeral_ports=True
    )
    try:
        headers = {"Authorization": f"Bearer {running.admin_key}"} if running.admin_key else {}
        async with httpx.AsyncClient(
            base_url=running.gateway_url, timeout=30, headers=headers
        ) as http:
            yield http
    finally:
        await running.stop()


async def test_integers_beyond_64_bits_round_trip(any_client: httpx.AsyncClient) -> None:
    definition = {
        "name": "big-integers",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "power", "type": "transform", "params": {"expression": "2 ** 64"}},
            {"id": "text", "type": "template", "params": {"template": "{{ 2 ** 64 }}"}},
            {"id": "code", "type": "code", "params": {"source": "result = [2**64, 2**100]"}},
            {
                "id": "next",
                "type": "transform",
                "params": {"expression": "code.result[1] + power.value + start.small"},
            },
            {
                "id": "done",
                "type": "output",
                "params": {
                    "value": {
                        "power": "{{ power.value }}",
                        "code": "{{ code.result }}",
                        "next": "{{ next.value }}",
                        "small": "{{ start.small }}",
                    }
                },
            },
        ],
        "edges": [
            {"source": "start", "target": "power"},
            {"source": "start", "target": "text"},
            {"source": "start", "target": "code"},
            {"source": "power", "target": "next"},
            {"source": "code", "target": "next"},
            {"source": "next", "target": "done"},
        ],
    }
    workflow_id = await create_workflow(any_client, definition)
    execution = await wait_final(
        any_client, await run(any_client, workflow_id, {"small": NEGATIVE, "huge": HUGE})
    )

    assert execution["status"] == "succeeded", execution["error"]
    assert execution["inputs"] == {"small": NEGATIVE, "huge": HUGE}
    assert node(execution, "power")["output"] == {"value": BIG}
    assert node(execution, "text")["output"] == {"text": str(BIG)}
    assert node(execution, "code")["output"] == {"result": [BIG, HUGE]}
    assert node(execution, "next")["output"] == {"value": HUGE + BIG + NEGATIVE}
    assert execution["outputs"] == {
        "power": BIG,
        "code": [BIG, HUGE],
        "next": HUGE + BIG + NEGATIVE,
        "small": NEGATIVE,
    }
    # Exactly, not as floats that happen to compare equal.
    assert type(execution["outputs"]["power"]) is int
    assert type(execution["inputs"]["small"]) is int

    stream = await events(any_client, execution["id"])
    succeeded = [e for e in stream if e["type"] == "node.completed" and e["node_id"] == "code"]
    assert succeeded, [e["type"] for e in stream]
    assert succeeded[0]["data"]["output"] == {"result": [BIG, HUGE]}


async def test_integers_beyond_pythons_bound_fail_clearly(any_client: httpx.AsyncClient) -> None:
    # 4300 digits is where Python stops converting ints to text: past it, a clear refusal
    # (never an internal error, nor a 500 from the exact decoder).
    workflow_id = await create_workflow(
        any_client,
        {
            "name": "too-big",
            "nodes": [
                {"id": "start", "type": "input"},
                {"id": "power", "type": "code", "params": {"source": "result = 10 ** 4400"}},
            ],
            "edges": [{"source": "start", "target": "power"}],
        },
    )
    execution = await wait_final(any_client, await run(any_client, workflow_id))
    assert execution["status"] == "failed"
    error = node(execution, "power")["error"]
    assert error["type"] == "CodeError", error
    assert "result is not JSON-serializable" in error["message"]

    refused = await any_client.post(
        f"/api/v1/workflows/{workflow_id}/execute",
        content=b'{"inputs": {"n": ' + b"9" * 5000 + b"}}",
        headers={"content-type": "application/json"},
    )
    assert refused.status_code == 400, refused.text
