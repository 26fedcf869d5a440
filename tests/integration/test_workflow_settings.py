"""Workflow-level settings (issue #20): `settings.timeout_s` fails an execution that runs
longer, and `settings.retry` is the retry policy of every node without its own."""

from __future__ import annotations

import httpx

from tests.integration import helpers
from tests.integration.helpers import ScriptedServer, create_workflow, node, run, wait_final

http_server = helpers.http_server


async def test_settings_timeout_s_fails_a_long_execution(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(
        client,
        {
            "name": "slow",
            "settings": {"timeout_s": 0.5},
            "nodes": [{"id": "nap", "type": "delay", "params": {"seconds": 30}}],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id), timeout=20)
    assert execution["status"] == "failed"
    assert execution["error"]["type"] == "Timeout"
    assert "0.5 s" in execution["error"]["message"]


async def test_settings_retry_is_the_default_of_nodes_without_their_own(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    http_server.route("/flaky", fail_times=2, json={"ok": True})
    http_server.route("/once", fail_times=1, json={"ok": True})
    workflow_id = await create_workflow(
        client,
        {
            "name": "retried",
            "settings": {"retry": {"max_attempts": 3, "initial_delay_s": 0.01, "jitter": False}},
            "nodes": [
                {
                    "id": "flaky",
                    "type": "http_request",
                    "params": {"url": http_server.url("/flaky")},
                },
                {
                    "id": "own",
                    "type": "http_request",
                    "params": {"url": http_server.url("/once")},
                    "retry": {"max_attempts": 1},
                    "on_error": "continue",
                },
            ],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id), timeout=30)
    assert node(execution, "flaky")["status"] == "succeeded"
    assert node(execution, "flaky")["attempts"] == 3
    assert http_server.calls["/flaky"] == 3
    # A node's own policy wins: one attempt, no retry.
    assert node(execution, "own")["status"] == "failed"
    assert http_server.calls["/once"] == 1
