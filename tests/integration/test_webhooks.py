"""Outbound webhooks through the embedded stack: subscriptions over the API, delivery by the
log service from the event bus to a local receiver that checks every signature."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, run, wait_final

pytestmark = pytest.mark.integration

FAST_RETRIES = {"webhook_backoff_s": 0.2, "webhook_backoff_max_s": 1.0, "webhook_max_attempts": 60}


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server that records POSTs and can go down and come back."""

    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append({"headers": headers, "body": body})
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def event_ids(self) -> Counter[str]:
        return Counter(item["headers"]["idempotency-key"] for item in self.received)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def _verify(secret: str, item: dict[str, Any]) -> dict[str, Any]:
    headers, body = item["headers"], item["body"]
    timestamp = headers["x-heddle-timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(headers["x-heddle-signature"], "sha256=" + expected.hexdigest())
    event: dict[str, Any] = json.loads(body)
    assert headers["idempotency-key"] == event["id"]
    assert headers["x-heddle-event"] == event["type"]
    return event


async def _two_node_workflow(client: httpx.AsyncClient, name: str) -> str:
    return await create_workflow(
        client,
        {
            "name": name,
            "nodes": [{"id": "start", "type": "input"}, {"id": "pass", "type": "noop"}],
            "edges": [{"source": "start", "target": "pass"}],
        },
    )


async def _subscribe(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/webhooks", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _deliveries(client: httpx.AsyncClient, webhook_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.mark.parametrize("stack", [FAST_RETRIES], indirect=True)
async def test_signed_events_reach_the_receiver_with_a_delivery_log(
    stack: Stack, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    workflow_id = await _two_node_workflow(client, "webhooked")
    other_id = await _two_node_workflow(client, "not-webhooked")
    hook = await _subscribe(
        client,
        url=receiver.url,
        events=["execution.completed", "node.completed"],
        workflow_id=workflow_id,
    )
    assert len(hook["secret"]) >= 32
    elsewhere = await _subscribe(
        client, url=receiver.url, events=["#"], workflow_id=other_id, active=False
    )
    # Reading never shows the secret again.
    read = await client.get(f"/api/v1/webhooks/{hook['id']}")
    assert read.status_code == 200 and "secret" not in read.json()
    listed = await client.get("/api/v1/webhooks")
    assert {item["id"] for item in listed.json()["items"]} == {hook["id"], elsewhere["id"]}

    execution_id = await run(client, workflow_id)
    await wait_final(client, execution_id)
    await wait_final(client, await run(client, other_id))
    await assert_eventually(lambda: len(receiver.received) >= 3, timeout=20)
    events = [_verify(hook["secret"], item) for item in receiver.received]
    assert sorted((event["type"], event["node_id"]) for event in events) == [
        ("execution.completed", None),
        ("node.completed", "pass"),
        ("node.completed", "start"),
    ]
    assert {event["execution_id"] for event in events} == {execution_id}

    async def all_delivered() -> bool:
        items = await _deliveries(client, hook["id"])
        return len(items) == 3 and all(item["status"] == "delivered" for item in items)

    await assert_eventually(all_delivered, timeout=10)
    assert await _deliveries(client, elsewhere["id"]) == []
    # A forged body fails the receiver's check.
    forged = dict(receiver.received[0], body=receiver.received[0]["body"] + b" ")
    with pytest.raises(AssertionError):
        _verify(hook["secret"], forged)

    deleted = await client.delete(f"/api/v1/webhooks/{hook['id']}")
    assert deleted.status_code == 204
    assert (await client.get(f"/api/v1/webhooks/{hook['id']}")).status_code == 404


@pytest.mark.parametrize("stack", [FAST_RETRIES], indirect=True)
async def test_a_receiver_down_for_10_s_gets_every_event_once_when_it_is_back(
    stack: Stack, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    workflow_id = await _two_node_workflow(client, "retried")
    hook = await _subscribe(
        client,
        url=receiver.url,
        events=["execution.*", "node.completed"],
        workflow_id=workflow_id,
        secret="a-secret-of-our-own-choosing",
    )
    await receiver.stop()
    executions = [await run(client, workflow_id) for _ in range(3)]
    for execution_id in executions:
        await wait_final(client, execution_id)

    async def retried_while_down() -> bool:
        items = await _deliveries(client, hook["id"])
        # execution.started + execution.completed + 2 node.completed per execution.
        return len(items) == 12 and all(
            item["status"] == "pending" and item["attempts"] >= 2 for item in items
        )

    await assert_eventually(retried_while_down, timeout=10, interval=0.2)
    await asyncio.sleep(10 - 2)  # down for 10 s in all
    assert receiver.received == []
    await receiver.start()  # same port

    async def all_delivered() -> bool:
        items = await _deliveries(client, hook["id"])
        return all(item["status"] == "delivered" for item in items)

    await assert_eventually(all_delivered, timeout=20, interval=0.2)
    counts = receiver.event_ids()
    assert len(counts) == 12
    assert set(counts.values()) == {1}, counts  # each event id exactly once
    for item in receiver.received:
        _verify("a-secret-of-our-own-choosing", item)
    deliveries = await _deliveries(client, hook["id"])
    assert all(item["last_status_code"] == 204 for item in deliveries)
    assert max(item["attempts"] for item in deliveries) >= 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_private_address_is_refused_unless_allowed(client: httpx.AsyncClient) -> None:
    # The stack allows 127.0.0.1 (HEDDLE_HTTP_ALLOW_HOSTS) and nothing else private.
    for url in (
        "http://10.1.2.3/hook",
        "http://192.168.0.10:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "http://a..b/hook",  # a name IDNA cannot encode: refused, not a 500
    ):
        response = await client.post("/api/v1/webhooks", json={"url": url, "events": ["#"]})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["details"][0]["field"] == "url", response.text
    allowed = await client.post(
        "/api/v1/webhooks",
        json={"url": f"http://127.0.0.1:{_free_port()}/hook", "events": ["execution.failed"]},
    )
    assert allowed.status_code == 201, allowed.text
    bad_pattern = await client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1/x", "events": ["Execution Failed"]}
    )
    assert bad_pattern.status_code == 422


@pytest.mark.parametrize(
    "stack",
    [{"webhook_backoff_s": 0.1, "webhook_backoff_max_s": 0.2, "webhook_max_attempts": 2}],
    indirect=True,
)
async def test_after_the_last_attempt_a_delivery_is_dead(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    workflow_id = await _two_node_workflow(client, "dead-lettered")
    nobody = f"http://127.0.0.1:{_free_port()}/hook"  # nothing listens there
    hook = await _subscribe(
        client, url=nobody, events=["execution.completed"], workflow_id=workflow_id
    )
    await wait_final(client, await run(client, workflow_id))

    async def dead() -> bool:
        items = await _deliveries(client, hook["id"])
        return len(items) == 1 and items[0]["status"] == "dead"

    await assert_eventually(dead, timeout=15, interval=0.2)
    (item,) = await _deliveries(client, hook["id"])
    assert item["attempts"] == 2
    assert item["last_status_code"] is None and "Connect" in item["last_error"]
    only_dead = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries?status=dead")
    assert [entry["id"] for entry in only_dead.json()["items"]] == [item["id"]]
