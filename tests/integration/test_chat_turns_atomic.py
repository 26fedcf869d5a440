"""A chat turn is stored with the node's end (issue #15): the session's two new messages are
written in the transaction that records the agent node's completion, so whoever sees the end
(an SSE or WebSocket follower, a poll of the execution's events on any replica) reads the
turns too. Checked on PostgreSQL by the rows' transaction ids (xmin): the messages, the
agent node's succeeded row and its node.completed event came from one transaction (event
rows are never rewritten: the relay deletes their outbox row, it does not mark them). (They
were appended in a transaction of their own after that commit, and a follower's poll could
see the end first.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from libs.cli.stack import Stack, start_stack


@pytest.fixture
async def stack(pg_url: str) -> AsyncIterator[Stack]:
    running = await start_stack({"database_url": pg_url}, ephemeral_ports=True)
    try:
        yield running
    finally:
        await running.stop()


async def test_the_turns_are_written_with_the_nodes_end(
    stack: Stack, client: httpx.AsyncClient, pg_url: str
) -> None:
    body = {
        "name": "chatter",
        "instructions": "Answer briefly.",
        "type": "chat",
        "model": "echo",
        "memory": {"last_n": 20},
    }
    created = await client.post("/api/v1/agents", json=body)
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    session_id = None
    for message in ("Hello.", "Again."):
        turn = {"message": message, **({"session_id": session_id} if session_id else {})}
        async with client.stream("POST", f"/api/v1/agents/{agent_id}/chat", json=turn) as r:
            assert r.status_code == 200, await r.aread()
            session_id = r.headers["x-session-id"]
            await r.aread()

    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        messages = await connection.fetch(
            "SELECT execution_id, role, content, xmin::text AS tx FROM agent_messages"
            " WHERE session_id = $1 ORDER BY seq",
            session_id,
        )
        ends = {
            row["execution_id"]: row["tx"]
            for row in await connection.fetch(
                "SELECT execution_id, xmin::text AS tx FROM node_runs"
                " WHERE node_id = 'agent' AND status = 'succeeded'"
            )
        }
        completed = {
            row["execution_id"]: row["tx"]
            for row in await connection.fetch(
                "SELECT execution_id, xmin::text AS tx FROM execution_events"
                " WHERE node_id = 'agent' AND type = 'node.completed'"
            )
        }
    finally:
        await connection.close()
    assert [(m["role"], m["content"]) for m in messages][0::2] == [
        ("user", "Hello."),
        ("user", "Again."),
    ], messages
    assert len(messages) == 4 and len({m["execution_id"] for m in messages}) == 2, messages
    for row in messages:
        assert row["tx"] == ends[row["execution_id"]], (dict(row), ends)
        assert row["tx"] == completed[row["execution_id"]], (dict(row), completed)
