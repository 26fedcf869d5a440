"""Failure handling through the HTTP API: on_error modes, retries, timeouts, `when` gates and
hostile expressions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from tests.integration import helpers
from tests.integration.helpers import (
    ScriptedServer,
    create_workflow,
    event_types,
    events,
    node,
    run,
    statuses,
    wait_final,
)

http_server = helpers.http_server


async def run_definition(
    client: httpx.AsyncClient, definition: dict[str, Any], inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    workflow_id = await create_workflow(client, definition)
    return await wait_final(client, await run(client, workflow_id, inputs))


def failing_call(url: str, **extra: Any) -> dict[str, Any]:
    return {"id": "bad", "type": "http_request", "params": {"url": url}, **extra}


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------- on_error


async def test_on_error_fail_fails_the_execution_and_cancels_the_rest(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.route("/broken", status=500, json={"oops": True})
    execution = await run_definition(
        client,
        {
            "name": "fail",
            "nodes": [
                failing_call(url),
                {"id": "after_bad", "type": "noop"},
                {"id": "slow", "type": "delay", "params": {"seconds": 10}},
                {"id": "after_slow", "type": "noop"},
            ],
            "edges": [
                {"source": "bad", "target": "after_bad"},
                {"source": "slow", "target": "after_slow"},
            ],
        },
    )
    assert execution["status"] == "failed"
    error = execution["error"]
    assert error["type"] == "NodeFailed"
    assert "'bad'" in error["message"] and "HttpError" in error["message"]
    assert error["details"]["node_id"] == "bad"
    assert statuses(execution) == {
        "bad": "failed",
        "after_bad": "cancelled",
        "slow": "cancelled",
        "after_slow": "cancelled",
    }
    bad = node(execution, "bad")
    assert bad["error"]["type"] == "HttpError"
    assert bad["error"]["details"]["status"] == 500
    # The running delay was stopped, not waited for.
    assert execution["duration_ms"] < 5000
    assert node(execution, "slow")["attempt_history"][-1]["status"] == "cancelled"
    stream = await events(client, execution["id"])
    assert event_types(stream)[-1] == "execution.failed"
    assert "node.started" not in event_types(stream, "after_bad")


async def test_on_error_continue_hands_default_output_downstream(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.route("/broken", status=502)
    execution = await run_definition(
        client,
        {
            "name": "continue",
            "nodes": [
                failing_call(
                    url, on_error="continue", default_output={"json": {"name": "fallback"}}
                ),
                {
                    "id": "use",
                    "type": "template",
                    "params": {"template": "got {{ bad.json.name }}"},
                },
            ],
            "edges": [{"source": "bad", "target": "use"}],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    bad = node(execution, "bad")
    assert bad["status"] == "failed"
    assert bad["error"]["type"] == "HttpError"
    assert bad["output"] == {"json": {"name": "fallback"}}
    assert node(execution, "use")["status"] == "succeeded"
    assert node(execution, "use")["output"] == {"text": "got fallback"}
    assert execution["error"] is None


async def test_on_error_skip_skips_the_node_and_its_downstream(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.route("/broken", status=500)
    execution = await run_definition(
        client,
        {
            "name": "skip",
            "nodes": [
                failing_call(url, on_error="skip"),
                {"id": "after", "type": "noop"},
                {"id": "independent", "type": "transform", "params": {"expression": "1"}},
            ],
            "edges": [{"source": "bad", "target": "after"}],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert statuses(execution) == {
        "bad": "skipped",
        "after": "skipped",
        "independent": "succeeded",
    }
    assert node(execution, "bad")["attempts"] == 1
    stream = await events(client, execution["id"])
    skipped = [e for e in stream if e["type"] == "node.skipped" and e["node_id"] == "bad"]
    assert skipped[0]["data"]["reason"] == "error"
    assert skipped[0]["data"]["error"]["type"] == "HttpError"


async def test_on_error_fail_branch_routes_to_the_error_port(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.route("/broken", status=503)
    execution = await run_definition(
        client,
        {
            "name": "fail-branch",
            "nodes": [
                failing_call(url, on_error="fail_branch"),
                {"id": "happy", "type": "noop"},
                {
                    "id": "handler",
                    "type": "template",
                    "params": {"template": "{{ bad.error.type }}: {{ bad.error.message }}"},
                },
            ],
            "edges": [
                {"source": "bad", "target": "happy"},
                {"source": "bad", "source_port": "error", "target": "handler"},
            ],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert statuses(execution) == {"bad": "failed", "happy": "skipped", "handler": "succeeded"}
    text = node(execution, "handler")["output"]["text"]
    assert text.startswith("HttpError: GET http://127.0.0.1:")
    assert "/broken returned 503" in text


# ---------------------------------------------------------------------------- retries


async def test_retryable_failures_are_retried_until_success(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.route("/flaky", fail_times=2, fail_status=500, json={"ok": True})
    execution = await run_definition(
        client,
        {
            "name": "retry",
            "nodes": [
                {
                    "id": "call",
                    "type": "http_request",
                    "params": {"url": url},
                    "retry": {"max_attempts": 3, "initial_delay_s": 0.05},
                }
            ],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    call = node(execution, "call")
    assert call["status"] == "succeeded"
    assert call["attempts"] == 3
    assert call["output"]["json"] == {"ok": True}
    history = call["attempt_history"]
    assert [(a["attempt"], a["status"]) for a in history] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert all(a["error"]["type"] == "HttpError" for a in history[:2])
    assert history[2]["error"] is None
    assert http_server.calls["/flaky"] == 3
    stream = await events(client, execution["id"])
    retrying = [e for e in stream if e["type"] == "node.retrying"]
    assert [(e["data"]["attempt"], e["data"]["next_attempt"]) for e in retrying] == [
        (1, 2),
        (2, 3),
    ]
    assert event_types(stream, "call").count("node.started") == 3


async def test_retries_stop_at_max_attempts(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.route("/down", status=500)
    execution = await run_definition(
        client,
        {
            "name": "retry-exhausted",
            "nodes": [
                {
                    "id": "call",
                    "type": "http_request",
                    "params": {"url": url},
                    "retry": {"max_attempts": 2, "initial_delay_s": 0.01},
                }
            ],
        },
    )
    assert execution["status"] == "failed"
    call = node(execution, "call")
    assert (call["status"], call["attempts"]) == ("failed", 2)
    assert http_server.calls["/down"] == 2


async def test_a_404_is_not_retried(client: httpx.AsyncClient, http_server: ScriptedServer) -> None:
    url = http_server.route("/missing", status=404)
    execution = await run_definition(
        client,
        {
            "name": "no-retry",
            "nodes": [
                {
                    "id": "call",
                    "type": "http_request",
                    "params": {"url": url},
                    "retry": {"max_attempts": 3, "initial_delay_s": 0.01},
                }
            ],
        },
    )
    assert execution["status"] == "failed"
    call = node(execution, "call")
    assert call["status"] == "failed"
    assert call["attempts"] == 1
    assert call["error"]["type"] == "HttpError"
    assert call["error"]["retryable"] is False
    assert http_server.calls["/missing"] == 1
    stream = await events(client, execution["id"])
    assert "node.retrying" not in event_types(stream)


async def test_429_is_retried_after_retry_after(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.route(
        "/limited", fail_times=1, fail_status=429, fail_headers={"retry-after": "1"}
    )
    execution = await run_definition(
        client,
        {
            "name": "rate-limited",
            "nodes": [
                {
                    "id": "call",
                    "type": "http_request",
                    "params": {"url": url},
                    "retry": {"max_attempts": 2, "initial_delay_s": 0.01},
                }
            ],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    call = node(execution, "call")
    assert call["attempts"] == 2
    first, second = call["attempt_history"]
    assert first["status"] == "failed"
    assert first["error"]["details"]["status"] == 429
    assert first["error"]["details"]["retry_after"] == 1.0
    # The server's Retry-After wins over the shorter backoff of the policy.
    gap = parse_time(second["started_at"]) - parse_time(first["finished_at"])
    assert gap >= dt.timedelta(seconds=0.9)
    assert http_server.calls["/limited"] == 2


# ---------------------------------------------------------------------------- timeouts, when


async def test_timeout_fails_a_slow_node(client: httpx.AsyncClient) -> None:
    execution = await run_definition(
        client,
        {
            "name": "timeout",
            "nodes": [
                {"id": "slow", "type": "delay", "params": {"seconds": 5}, "timeout_s": 0.2},
                {"id": "after", "type": "noop"},
            ],
            "edges": [{"source": "slow", "target": "after"}],
        },
    )
    assert execution["status"] == "failed"
    slow = node(execution, "slow")
    assert slow["status"] == "failed"
    assert slow["error"]["type"] == "Timeout"
    assert slow["output"] is None
    assert node(execution, "after")["status"] == "cancelled"
    assert slow["duration_ms"] < 2000


async def test_timeout_of_an_http_request(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    url = http_server.route("/slow", sleep_s=3)
    execution = await run_definition(
        client,
        {
            "name": "http-timeout",
            "nodes": [
                {"id": "call", "type": "http_request", "params": {"url": url}, "timeout_s": 0.3}
            ],
        },
    )
    assert execution["status"] == "failed"
    call = node(execution, "call")
    assert call["error"]["type"] == "Timeout"
    assert call["duration_ms"] < 2000


async def test_a_false_when_gate_skips_the_node_and_its_downstream(
    client: httpx.AsyncClient,
) -> None:
    definition = {
        "name": "gated",
        "inputs": {"go": {"type": "boolean", "required": True}},
        "nodes": [
            {"id": "first", "type": "transform", "params": {"expression": "1"}},
            {
                "id": "gated",
                "type": "transform",
                "params": {"expression": "first.value + 1"},
                "when": "inputs.go",
            },
            {"id": "after", "type": "noop"},
        ],
        "edges": [{"source": "first", "target": "gated"}, {"source": "gated", "target": "after"}],
    }
    workflow_id = await create_workflow(client, definition)
    closed = await wait_final(client, await run(client, workflow_id, {"go": False}))
    assert closed["status"] == "succeeded", closed["error"]
    assert statuses(closed) == {"first": "succeeded", "gated": "skipped", "after": "skipped"}
    stream = await events(client, closed["id"])
    gated = [e for e in stream if e["node_id"] == "gated" and e["type"] == "node.skipped"]
    assert gated[0]["data"]["reason"] == "when"
    opened = await wait_final(client, await run(client, workflow_id, {"go": True}))
    assert statuses(opened) == {"first": "succeeded", "gated": "succeeded", "after": "succeeded"}
    assert node(opened, "after")["output"] == {"value": 2}


# ---------------------------------------------------------------------------- hostile input


HOSTILE = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    # Jinja's ** is left-associative: 9**9**9**9 is only 9**729, so nest to the right.
    "{{ 9**(9**9**9) }}",
    "{{ 'x' * 10**10 }}",
    "{{ range(10**9) | list | length }}",
]


async def test_hostile_expressions_are_refused(client: httpx.AsyncClient) -> None:
    # One stack for all of them; each is either refused at validation (422, located) or
    # fails its node with an ExpressionError. Never a 500, never a hang.
    for expression in HOSTILE:
        definition = {
            "name": "hostile",
            "nodes": [{"id": "evil", "type": "template", "params": {"template": expression}}],
        }
        checked = await client.post("/api/v1/workflows/validate", json=definition, timeout=10)
        assert checked.status_code == 200, (expression, checked.text)
        created = await client.post("/api/v1/workflows", json=definition, timeout=10)
        if created.status_code == 422:
            issues = created.json()["error"]["details"]
            assert checked.json()["valid"] is False, expression
            assert any(
                issue["node_id"] == "evil" and issue["field"] == "nodes[0].params.template"
                for issue in issues
            ), (expression, issues)
            continue
        assert created.status_code == 201, (expression, created.text)
        execution_id = await run(client, created.json()["id"])
        execution = await wait_final(client, execution_id, timeout=10)
        assert execution["status"] == "failed", expression
        evil = node(execution, "evil")
        assert evil["error"]["type"] == "ExpressionError", (expression, evil["error"])
        assert evil["output"] is None
