"""A secret's value reaches the node that references it and nothing else: not an API
response, not an event, not a stored log, not a database row, even when a node echoes it."""

from __future__ import annotations

from pathlib import Path

import httpx

from libs.cli.stack import Stack
from tests.helpers import assert_eventually
from tests.security.support import bearer, new_key, wait_final

SECRET = "tok-9f8e7d6c5b4a-very-secret"

ECHO = {
    "name": "echo-a-secret",
    "nodes": [
        {"id": "start", "type": "input"},
        {
            "id": "leak",
            "type": "template",
            "params": {"template": "the token is {{ secrets.API_TOKEN }}"},
        },
        {
            # Prints the value (stdout, logs) and fails with it in the error message.
            "id": "boom",
            "type": "code",
            "params": {
                "language": "python",
                "source": 'token = inputs["secrets"]["API_TOKEN"]\n'
                'print("printing", token)\n'
                'raise ValueError("failing with " + token)\n',
            },
            "on_error": "continue",
        },
        {"id": "done", "type": "output", "params": {"value": {"said": "{{ leak.text }}"}}},
    ],
    "edges": [
        {"source": "start", "target": "leak"},
        {"source": "leak", "target": "boom"},
        {"source": "leak", "target": "done"},
    ],
}


def _database_files(stack: Stack) -> list[Path]:
    path = Path(stack.settings["database_url"].split("///", 1)[1])
    return [p for p in (path, Path(f"{path}-wal")) if p.exists()]


async def test_secret_values_never_leave_the_node(stack: Stack, client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/secrets", json={"name": "API_TOKEN", "value": SECRET})
    assert created.status_code == 201, created.text
    assert SECRET not in created.text
    listed = await client.get("/api/v1/secrets")
    assert [s["name"] for s in listed.json()["secrets"]] == ["API_TOKEN"]
    assert SECRET not in listed.text

    workflow = await client.post("/api/v1/workflows", json=ECHO)
    assert workflow.status_code == 201, workflow.text
    started = await client.post(f"/api/v1/workflows/{workflow.json()['id']}/execute", json={})
    execution_id = started.json()["execution_id"]
    async with client.stream("GET", f"/api/v1/executions/{execution_id}/events") as stream:
        events = "".join([line async for line in stream.aiter_lines()])
    execution = await wait_final(client, execution_id)
    assert execution["status"] == "succeeded", execution
    leak = next(n for n in execution["nodes"] if n["node_id"] == "leak")
    # The node did get the value (it rendered it), and it was redacted before it was stored.
    assert leak["output"] == {"text": "the token is ***"}
    assert execution["outputs"] == {"said": "the token is ***"}
    boom = next(n for n in execution["nodes"] if n["node_id"] == "boom")
    assert boom["status"] == "failed"
    assert "failing with ***" in boom["error"]["message"]

    texts = {
        "events": events,
        "execution": str(execution),
        "executions": (await client.get("/api/v1/executions")).text,
        "workflow": (await client.get(f"/api/v1/workflows/{workflow.json()['id']}")).text,
    }
    logs_text = ""

    async def boom_printed() -> bool:
        # The log service stores what it consumes from the bus: wait for the line `boom`
        # printed, or "the secret is not in the logs" would pass with no log stored at all.
        nonlocal logs_text
        logs = await client.get(f"/api/v1/executions/{execution_id}/logs")
        assert logs.status_code == 200, logs.text
        logs_text = logs.text
        return any(
            record["node_id"] == "boom" and "printing" in record["message"]
            for record in logs.json()["records"]
        )

    await assert_eventually(
        boom_printed, timeout=10, interval=0.1, message="boom's print never reached the logs"
    )
    assert "printing ***" in logs_text  # stored, and redacted
    texts["logs"] = logs_text
    async with client.stream("GET", f"/api/v1/executions/{execution_id}/events") as stream:
        texts["events replay"] = "".join([line async for line in stream.aiter_lines()])
    for where, text in texts.items():
        assert SECRET not in text, where
    assert "***" in texts["events"]
    for file in _database_files(stack):
        assert SECRET.encode() not in file.read_bytes(), file


async def test_secrets_are_per_tenant(stack: Stack, client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/api/v1/secrets", json={"name": "ONLY_MINE", "value": SECRET})
    ).status_code == 201
    other, _ = await new_key(stack, tenant="other", scopes=("read", "write", "execute", "admin"))
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=bearer(other)) as http:
        assert (await http.get("/api/v1/secrets")).json() == {"secrets": []}
        assert (await http.delete("/api/v1/secrets/ONLY_MINE")).status_code == 404
        workflow = await http.post(
            "/api/v1/workflows",
            json={
                "name": "steal",
                "nodes": [
                    {
                        "id": "t",
                        "type": "template",
                        "params": {"template": "{{ secrets.ONLY_MINE }}"},
                    }
                ],
                "edges": [],
            },
        )
        assert workflow.status_code == 201, workflow.text
        started = await http.post(f"/api/v1/workflows/{workflow.json()['id']}/execute", json={})
        execution = await wait_final(http, started.json()["execution_id"])
    assert execution["status"] == "failed"
    assert "ONLY_MINE" in str(execution["error"]) and SECRET not in str(execution)
