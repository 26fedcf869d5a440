"""What a start checks, on SQLite (the ORM's reads) and on PostgreSQL (one statement on the
writer's connection, the definition sent only when the replica has not compiled it):
the latest version is read at every start, a version named runs that version, a missing
version or a deleted workflow is a 404 even with its definition compiled, and the
tenant's quota of running executions is counted at every start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from libs.cli.stack import Stack, start_stack
from libs.common.db import create_engine, session_factory, utcnow
from libs.migrations import upgrade
from services.workflow.models import ExecutionRow, WorkflowRow, WorkflowVersionRow
from services.workflow.pg_writer import _START_LOOKUP, BatchWriter


def _echo(text: str) -> dict[str, Any]:
    return {
        "name": "start-lookup",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "done", "type": "output", "params": {"value": text}},
        ],
        "edges": [{"source": "start", "target": "done"}],
    }


SLOW = {
    "name": "start-lookup-slow",
    "nodes": [{"id": "wait", "type": "delay", "params": {"seconds": 30}}],
    "edges": [],
}


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    running = await start_stack(
        {"database_url": database_url, "quota_max_concurrent_executions": 1},
        ephemeral_ports=True,
    )
    try:
        yield running
    finally:
        await running.stop()


async def _run(client: httpx.AsyncClient, workflow_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/api/v1/workflows/{workflow_id}/run", json=body)


async def test_a_start_reads_the_latest_version_and_runs_the_one_named(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/api/v1/workflows", json=_echo("one"))
    assert created.status_code == 201, created.text
    workflow = created.json()["id"]
    first = await _run(client, workflow)
    assert first.status_code == 200, first.text
    assert first.json()["outputs"] == {"done": "one"}

    # A new version after version 1 was compiled: the next start runs it.
    updated = await client.put(f"/api/v1/workflows/{workflow}", json=_echo("two"))
    assert updated.status_code == 200, updated.text
    second = await _run(client, workflow)
    assert second.status_code == 200, second.text
    assert second.json()["outputs"] == {"done": "two"}
    # Both compiled now; the one named is the one run.
    again = await _run(client, workflow, version=1)
    assert again.status_code == 200, again.text
    assert again.json()["outputs"] == {"done": "one"}

    missing = await _run(client, workflow, version=7)
    assert missing.status_code == 404, missing.text
    assert "no version 7" in missing.text

    deleted = await client.delete(f"/api/v1/workflows/{workflow}")
    assert deleted.status_code == 204, deleted.text
    gone = await _run(client, workflow, version=1)  # compiled here, but deleted
    assert gone.status_code == 404, gone.text
    unknown = await _run(client, "00000000-0000-4000-8000-000000000000")
    assert unknown.status_code == 404, unknown.text


async def test_the_quota_of_running_executions_is_counted_at_every_start(
    client: httpx.AsyncClient,
) -> None:
    workflow = (await client.post("/api/v1/workflows", json=SLOW)).json()["id"]
    first = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert first.status_code == 202, first.text
    second = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert second.status_code == 429, second.text
    assert second.json()["error"]["details"] == {
        "quota": "max_concurrent_executions",
        "limit": 1,
    }
    cancelled = await client.post(f"/api/v1/executions/{first.json()['execution_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    third = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
    assert third.status_code == 202, third.text
    await client.post(f"/api/v1/executions/{third.json()['execution_id']}/cancel")


async def test_the_quota_count_reads_only_the_tenants_active_executions(pg_url: str) -> None:
    # The writer's connections plan generically: the count must match the partial index
    # whatever the statistics (a fresh table has none), or it filters every row the tenant
    # ever ran, at every start.
    engine = create_engine(pg_url)
    await upgrade(engine)
    rows: list[tuple[str, str, str, str | None]] = [
        *((f"done-{i}", "t1", "succeeded", None) for i in range(30)),
        ("running", "t1", "running", None),
        ("paused", "t1", "paused", None),
        ("pending", "t1", "pending", None),
        ("child", "t1", "running", "running"),
        ("other-tenant", "t2", "running", None),
    ]
    async with session_factory(engine).begin() as session:
        session.add(WorkflowRow(id="w1", tenant_id="t1", name="w", latest_version=1))
        await session.flush()
        session.add(WorkflowVersionRow(workflow_id="w1", version=1, definition={}))
        for execution_id, tenant, status, parent in rows:
            session.add(
                ExecutionRow(
                    id=execution_id,
                    tenant_id=tenant,
                    workflow_id="w1",
                    workflow_version=1,
                    status=status,
                    parent_execution_id=parent,
                )
            )
    await engine.dispose()
    writer = BatchWriter(pg_url)
    try:
        found = await writer.start_lookup(
            workflow_id="w1", tenant_id="t1", version=0, held_versions=[], count_active=True
        )
        assert found is not None
        assert found.active == 3
    finally:
        await writer.close()
    connection = await asyncpg.connect(
        make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False),
        server_settings={"plan_cache_mode": "force_generic_plan"},
    )
    try:
        await connection.execute(
            f"PREPARE lookup(text, text, int, int[], boolean) AS {_START_LOOKUP}"
        )
        plan = "\n".join(
            row[0]
            for row in await connection.fetch("EXPLAIN EXECUTE lookup('w1', 't1', 0, '{}', true)")
        )
    finally:
        await connection.close()
    assert "ix_executions_active_tenant" in plan, plan


async def test_a_start_is_committed_with_its_first_step_and_a_raced_key_starts_once(
    pg_url: str,
) -> None:
    # PostgreSQL: the start's rows go in with the runner's first batch (one statement), so
    # the start answers with the execution already running; two starts racing with one
    # idempotency key still make one execution (the loser's insert is refused, its runner
    # ends without a trace).
    running = await start_stack({"database_url": pg_url}, ephemeral_ports=True)
    headers = {"Authorization": f"Bearer {running.admin_key}"} if running.admin_key else {}
    try:
        async with httpx.AsyncClient(
            base_url=running.gateway_url, timeout=30, headers=headers
        ) as client:
            workflow = (await client.post("/api/v1/workflows", json=SLOW)).json()["id"]
            started = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
            assert started.status_code == 202, started.text
            assert started.json()["status"] == "running"
            execution = started.json()["execution_id"]
            detail = (await client.get(f"/api/v1/executions/{execution}")).json()
            assert detail["status"] == "running"
            nodes = {node["node_id"]: node["status"] for node in detail["nodes"]}
            assert nodes["wait"] != "pending"

            raced = await asyncio.gather(
                *(
                    client.post(
                        f"/api/v1/workflows/{workflow}/execute",
                        json={},
                        headers={"Idempotency-Key": "raced"},
                    )
                    for _ in range(4)
                )
            )
            assert all(reply.status_code in (200, 202) for reply in raced), raced
            assert len({reply.json()["execution_id"] for reply in raced}) == 1
            assert [reply.json()["created"] for reply in raced].count(True) == 1

            # A lease renewal while a start's rows are not written yet: no row to renew is
            # not a lost lease (it cancelled the runner, and the start never answered).
            engine = running.services["workflow"].engine
            insert = engine._writer.insert_execution

            async def renew_first(*args: Any) -> bool:
                await engine._renew_leases()
                return await insert(*args)

            engine._writer.insert_execution = renew_first
            renewed = await client.post(f"/api/v1/workflows/{workflow}/execute", json={})
            engine._writer.insert_execution = insert
            assert renewed.status_code == 202, renewed.text
            assert renewed.json()["execution_id"] in engine.runners
            listed = (await client.get("/api/v1/executions", params={"limit": 50})).json()
            assert len(listed["items"]) == 3, listed
            for item in listed["items"]:
                await client.post(f"/api/v1/executions/{item['id']}/cancel")
    finally:
        await running.stop()


async def test_a_start_of_a_version_held_here_is_checked_by_its_insert(pg_url: str) -> None:
    # PostgreSQL: a start of a version this replica holds compiled (or saved) is not
    # looked up; its insert checks what the lookup would (StartGuard) and inserts nothing
    # when that fails: a version saved by another replica, the workflow deleted. The start
    # is then made again with the lookup.
    running = await start_stack({"database_url": pg_url}, ephemeral_ports=True)
    headers = {"Authorization": f"Bearer {running.admin_key}"} if running.admin_key else {}
    engine = running.services["workflow"].engine
    lookup = engine._writer.start_lookup
    lookups: list[int] = []

    async def counted(**kwargs: Any) -> Any:
        lookups.append(kwargs["version"])
        return await lookup(**kwargs)

    engine._writer.start_lookup = counted
    database = create_engine(pg_url)
    try:
        async with httpx.AsyncClient(
            base_url=running.gateway_url, timeout=30, headers=headers
        ) as client:
            workflow = (await client.post("/api/v1/workflows", json=_echo("one"))).json()["id"]
            first = await _run(client, workflow)
            assert first.status_code == 200 and first.json()["outputs"] == {"done": "one"}
            assert lookups == []  # saved through this replica: held

            # Version 2 saved through another replica: this one still holds only 1.
            async with session_factory(database)() as session, session.begin():
                session.add(
                    WorkflowVersionRow(workflow_id=workflow, version=2, definition=_echo("two"))
                )
                row = await session.get(WorkflowRow, workflow)
                assert row is not None
                row.latest_version = 2
            second = await _run(client, workflow)
            assert second.status_code == 200 and second.json()["outputs"] == {"done": "two"}
            assert lookups == [0]  # the guess of version 1 refused, looked up
            third = await _run(client, workflow)
            assert third.json()["outputs"] == {"done": "two"} and lookups == [0]
            named = await _run(client, workflow, version=1)  # held, named: runs as it is
            assert named.json()["outputs"] == {"done": "one"} and lookups == [0]

            # Deleted by another replica: refused by the insert, then a 404 from the lookup.
            async with session_factory(database)() as session, session.begin():
                row = await session.get(WorkflowRow, workflow)
                assert row is not None
                row.deleted_at = utcnow()
            gone = await _run(client, workflow)
            assert gone.status_code == 404, gone.text
            assert lookups == [0, 0]
            async with session_factory(database)() as session:
                count = await session.scalar(
                    select(func.count())
                    .select_from(ExecutionRow)
                    .where(ExecutionRow.workflow_id == workflow)
                )
            assert count == 4  # no row of the refused guesses
    finally:
        await database.dispose()
        await running.stop()
