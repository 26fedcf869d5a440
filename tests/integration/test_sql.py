"""The sql node against the real PostgreSQL (db test) and MariaDB (db test) of this machine.

The executor is driven directly for the database behaviour (parameters, writes, read-only,
timeouts, errors, types); the embedded stack runs a workflow whose connection URL is a tenant
secret, and the secret is looked for in everything the API, the events and the logs give back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg
import httpx
import pytest

from libs.cli.stack import Stack
from libs.common.artifacts import ArtifactRef, FileArtifactStore, read_bytes
from services.node.executors.base import NodeError, NodeRequest, NodeSettings, Services
from services.node.executors.sql import SqlExecutor
from tests.integration.helpers import create_workflow, events, node, run, wait_final
from tests.node.fakes import FakeAi, FakeTools, FakeWorkflows

pytestmark = pytest.mark.integration

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
MARIA_URL = "mysql://root@127.0.0.1:3306/test"
DATABASES = {"postgres": PG_URL, "mariadb": MARIA_URL}


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    async with httpx.AsyncClient() as client:
        yield Services(
            ai=FakeAi(),
            tools=FakeTools(),
            workflows=FakeWorkflows(),
            http=client,
            settings=NodeSettings(http_allow_hosts=["127.0.0.1"], sql_max_rows=500),
        )


@pytest.fixture
async def executor() -> AsyncIterator[SqlExecutor]:
    sql = SqlExecutor()
    yield sql
    await sql.close()


async def _admin(kind: str, statements: list[str]) -> None:
    if kind == "postgres":
        conn = await asyncpg.connect(PG_URL)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()
        return
    maria = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test")
    try:
        async with maria.cursor() as cursor:
            for statement in statements:
                await cursor.execute(statement)
        await maria.commit()
    finally:
        maria.close()


@pytest.fixture(params=sorted(DATABASES))
async def table(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """(database kind, name of a fresh table `id, name, price, created`) with 3 rows."""
    kind: str = request.param
    name = f"sql_node_{uuid.uuid4().hex[:10]}"
    await _admin(
        kind,
        [
            f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name VARCHAR(50), "
            "price NUMERIC(10, 2), created DATE)",
            f"INSERT INTO {name} VALUES (1, 'apple', 1.25, '2026-01-02'), "
            "(2, 'pear', 2.50, '2026-01-03'), (3, 'plum', 10.00, '2026-01-04')",
        ],
    )
    yield kind, name
    await _admin(kind, [f"DROP TABLE {name}"])


def _request(params: dict[str, Any], context: dict[str, Any] | None = None) -> NodeRequest:
    return NodeRequest(
        execution_id="ex1",
        node_id="query",
        node_type="sql",
        attempt=1,
        idempotency_key="ex1/query/1",
        params=params,
        context={"inputs": {}, "system": {}, **(context or {})},
    )


async def _run(
    executor: SqlExecutor, services: Services, kind: str, **params: Any
) -> dict[str, Any]:
    result = await executor.execute(
        _request(
            {"connection": "{{ secrets.DB }}", **params}, {"secrets": {"DB": DATABASES[kind]}}
        ),
        services,
    )
    output: dict[str, Any] = result.output
    return output


async def _fails(executor: SqlExecutor, services: Services, kind: str, **params: Any) -> NodeError:
    with pytest.raises(NodeError) as caught:
        await _run(executor, services, kind, **params)
    return caught.value


async def test_select_with_bound_parameters(
    executor: SqlExecutor, services: Services, table: tuple[str, str]
) -> None:
    kind, name = table
    result = await executor.execute(
        _request(
            {
                "connection": "{{ secrets.DB }}",
                "query": f"SELECT id, name, price, created FROM {name} WHERE price > :floor "
                "ORDER BY id",
                "parameters": {"floor": "{{ inputs.floor }}"},
            },
            {"secrets": {"DB": DATABASES[kind]}, "inputs": {"floor": 2}},
        ),
        services,
    )
    output = result.output
    assert output["columns"] == ["id", "name", "price", "created"]
    assert output["rows"] == [
        {"id": 2, "name": "pear", "price": 2.5, "created": "2026-01-03"},
        {"id": 3, "name": "plum", "price": 10, "created": "2026-01-04"},
    ]
    assert output["truncated"] is False


async def test_parameters_are_bound_not_interpolated(
    executor: SqlExecutor, services: Services, table: tuple[str, str]
) -> None:
    kind, name = table
    hostile = "x' OR '1'='1"
    result = await executor.execute(
        _request(
            {
                "connection": "{{ secrets.DB }}",
                "query": f"SELECT id FROM {name} WHERE name = :name OR price = :price",
                "parameters": {"name": "{{ inputs.name }}", "price": "{{ inputs.price }}"},
            },
            {"secrets": {"DB": DATABASES[kind]}, "inputs": {"name": hostile, "price": 1.25}},
        ),
        services,
    )
    # The injection attempt matched nothing: only the price matched.
    assert result.output["rows"] == [{"id": 1}]
    assert result.output["truncated"] is False


async def test_row_limit_reports_truncation(
    executor: SqlExecutor, services: Services, table: tuple[str, str]
) -> None:
    kind, name = table
    output = await _run(
        executor, services, kind, query=f"SELECT id FROM {name} ORDER BY id", max_rows=2
    )
    assert output["rows"] == [{"id": 1}, {"id": 2}]
    assert output["row_count"] == 2
    assert output["truncated"] is True
    too_many = await _fails(executor, services, kind, query="SELECT 1", max_rows=501)
    assert too_many.type == "ValidationError" and "max_rows" in too_many.message


async def test_read_only_by_default_writes_with_write_true(
    executor: SqlExecutor, services: Services, table: tuple[str, str]
) -> None:
    kind, name = table
    insert = f"INSERT INTO {name} (id, name, price, created) VALUES (:id, :name, 3.75, NULL)"
    refused = await _fails(
        executor, services, kind, query=insert, parameters={"id": 4, "name": "fig"}
    )
    assert refused.type == "SqlError"
    assert "read" in refused.message.lower() and "only" in refused.message.lower()
    written = await _run(
        executor, services, kind, query=insert, parameters={"id": 4, "name": "fig"}, write=True
    )
    assert written["affected_rows"] == 1
    assert written["rows"] == []
    check = await _run(executor, services, kind, query=f"SELECT name FROM {name} WHERE id = 4")
    assert check["rows"] == [{"name": "fig"}]


async def test_statement_timeout(
    executor: SqlExecutor, services: Services, table: tuple[str, str]
) -> None:
    kind, _ = table
    sleep = "SELECT pg_sleep(5)" if kind == "postgres" else "SELECT SLEEP(5)"
    error = await _fails(executor, services, kind, query=sleep, timeout_s=0.5)
    assert error.type == "SqlTimeoutError", error.to_dict()
    assert "0.5s" in error.message


async def test_syntax_error_is_located(
    executor: SqlExecutor, services: Services, table: tuple[str, str]
) -> None:
    kind, name = table
    error = await _fails(executor, services, kind, query=f"SELEC id FROM {name}")
    assert error.type == "SqlError"
    assert error.retryable is False
    assert error.details["param"] == "query"
    if kind == "postgres":
        assert 'syntax error at or near "SELEC"' in error.message
        assert "at character 1 of the query" in error.message
    else:
        assert "SQL syntax" in error.message and "line 1" in error.message


async def test_a_templated_query_is_refused_before_it_runs(
    executor: SqlExecutor, services: Services, table: tuple[str, str]
) -> None:
    kind, name = table
    error = await _fails(
        executor, services, kind, query=f"SELECT * FROM {name} WHERE name = '{{{{ inputs.x }}}}'"
    )
    assert error.type == "ValidationError"
    assert "param 'query'" in error.message and "bound parameters" in error.message


async def test_types_are_json_safe(executor: SqlExecutor, services: Services) -> None:
    pg = await _run(
        executor,
        services,
        "postgres",
        query="SELECT 1.10::numeric AS exact, 12345678901234567890.123456789::numeric AS big, "
        "'2026-01-02 03:04:05+00'::timestamptz AS at, '1 hour'::interval AS span, "
        "'\\x0102'::bytea AS raw, '5f0c4b8e-1b4e-4c43-9f0e-3d1c1c7a6b2a'::uuid AS id, "
        "'{\"a\": [1, 2]}'::jsonb AS doc",
    )
    row = pg["rows"][0]
    assert row == {
        "exact": 1.1,
        "big": "12345678901234567890.123456789",
        "at": "2026-01-02T03:04:05+00:00",
        "span": 3600.0,
        "raw": "AQI=",
        "id": "5f0c4b8e-1b4e-4c43-9f0e-3d1c1c7a6b2a",
        "doc": {"a": [1, 2]},
    }
    json.dumps(pg)  # plain JSON throughout
    maria = await _run(
        executor,
        services,
        "mariadb",
        query="SELECT CAST(2.50 AS DECIMAL(5,2)) AS price, TIMESTAMP('2026-01-02 03:04:05') AS at",
    )
    assert maria["rows"] == [{"price": 2.5, "at": "2026-01-02T03:04:05"}]


async def test_connection_errors_never_show_the_url(
    executor: SqlExecutor, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "hunter2-" + uuid.uuid4().hex
    cases = {
        f"postgresql://postgres:{password}@127.0.0.1:1/test": "SqlConnectionError",
        f"sqlite:///tmp/{password}.db": "SqlConnectionError",
        f"nonsense {password}": "SqlConnectionError",
        f"postgresql://postgres:{password}@127.0.0.1/test?bogus_option=1": "SqlConnectionError",
        f"postgresql://postgres:{password}@10.1.2.3/test": "SqlConnectionError",  # private
    }
    for url, expected in cases.items():
        with pytest.raises(NodeError) as caught:
            await executor.execute(
                _request(
                    {"connection": "{{ secrets.DB }}", "query": "SELECT 1"},
                    {"secrets": {"DB": url}},
                ),
                services,
            )
        assert caught.value.type == expected, caught.value.to_dict()
        assert password not in json.dumps(caught.value.to_dict())
        assert password not in str(caught.value)
    assert "HEDDLE_HTTP_ALLOW_HOSTS" in str(caught.value)  # the private address's refusal
    assert password not in caplog.text


async def test_engines_are_pooled_per_url_and_bounded(services: Services) -> None:
    sql = SqlExecutor()
    try:
        bounded = Services(
            **{
                **services.__dict__,
                "settings": NodeSettings(http_allow_hosts=["127.0.0.1"], sql_max_engines=2),
            }
        )
        urls = [
            f"postgresql://postgres@127.0.0.1:5432/test?prepared_statement_cache_size={n}"
            for n in range(3)
        ]
        for url in [*urls, urls[2], urls[2]]:
            await sql.execute(
                _request(
                    {"connection": "{{ secrets.DB }}", "query": "SELECT 1 AS one"},
                    {"secrets": {"DB": url}},
                ),
                bounded,
            )
        assert len(sql.engines) == 2
    finally:
        await sql.close()


# ---------------------------------------------------------------------------- through the stack


async def test_a_workflow_reads_its_database_from_a_secret_that_never_shows(
    stack: Stack, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every service of the embedded stack logs here
    password = "s3cret-" + uuid.uuid4().hex
    # The local PostgreSQL trusts loopback: the password is accepted and ignored.
    secret_url = f"postgresql://postgres:{password}@127.0.0.1:5432/test"
    put = await client.post("/api/v1/secrets", json={"name": "WAREHOUSE", "value": secret_url})
    assert put.status_code == 201, put.text
    workflow_id = await create_workflow(
        client,
        {
            "name": "sql-secret",
            "nodes": [
                {"id": "start", "type": "input"},
                {
                    "id": "query",
                    "type": "sql",
                    "params": {
                        "connection": "{{ secrets.WAREHOUSE }}",
                        "query": "SELECT :n * 2 AS doubled, current_setting('application_name') "
                        "AS app",
                        "parameters": {"n": "{{ inputs.n }}"},
                    },
                },
                {
                    "id": "broken",
                    "type": "sql",
                    "params": {
                        "connection": "{{ secrets.WAREHOUSE }}",
                        "query": "SELECT * FROM no_such_table_here",
                    },
                },
            ],
            "edges": [
                {"source": "start", "target": "query"},
                {"source": "query", "target": "broken"},
            ],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id, {"n": 21}), timeout=60)
    assert node(execution, "query")["output"]["rows"][0]["doubled"] == 42
    assert node(execution, "broken")["status"] == "failed"
    assert node(execution, "broken")["error"]["type"] == "SqlError"
    assert "no_such_table_here" in node(execution, "broken")["error"]["message"]
    stream = await events(client, execution["id"])
    logs = await client.get(f"/api/v1/executions/{execution['id']}/logs")
    assert logs.status_code == 200
    everything = json.dumps(execution) + json.dumps(stream) + logs.text + caplog.text
    assert password not in everything
    assert secret_url not in everything


async def test_validation_refuses_a_templated_query(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/workflows/validate",
        json={
            "name": "sql-injection",
            "nodes": [
                {"id": "start", "type": "input"},
                {
                    "id": "query",
                    "type": "sql",
                    "params": {
                        "connection": "{{ secrets.WAREHOUSE }}",
                        "query": "SELECT * FROM users WHERE name = '{{ inputs.name }}'",
                    },
                },
            ],
            "edges": [{"source": "start", "target": "query"}],
        },
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["valid"] is False
    issues = [issue for issue in report["issues"] if issue["code"] == "templated_sql"]
    assert len(issues) == 1, report
    assert issues[0]["node_id"] == "query"
    assert issues[0]["field"] == "nodes[1].params.query"


def _with_store(services: Services, root: Path, threshold: int) -> Services:
    return dataclasses.replace(
        services,
        artifacts=FileArtifactStore(root),
        settings=services.settings.model_copy(update={"claim_check_bytes": threshold}),
    )


async def _lines(services: Services, ref: dict[str, Any]) -> list[dict[str, Any]]:
    assert services.artifacts is not None
    parsed = ArtifactRef.from_json(ref)
    assert parsed is not None
    data = await read_bytes(services.artifacts, parsed)
    assert hashlib.sha256(data).hexdigest() == ref["sha256"] and len(data) == ref["size"]
    return [json.loads(line) for line in data.decode().splitlines()]


async def test_large_results_stream_to_an_artifact_as_json_lines(
    executor: SqlExecutor, services: Services, table: tuple[str, str], tmp_path: Path
) -> None:
    kind, name = table
    query = f"SELECT id, name, price, created FROM {name} ORDER BY id"
    expected = [
        {"id": 1, "name": "apple", "price": 1.25, "created": "2026-01-02"},
        {"id": 2, "name": "pear", "price": 2.5, "created": "2026-01-03"},
        {"id": 3, "name": "plum", "price": 10, "created": "2026-01-04"},
    ]
    # Under the threshold: inline rows, as before.
    roomy = _with_store(services, tmp_path, 10_000)
    inline = await _run(executor, roomy, kind, query=query)
    assert inline["rows"] == expected and "rows_ref" not in inline

    # Past it (two rows' JSON is over 100 bytes): every row goes to the artifact.
    tight = _with_store(services, tmp_path, 100)
    output = await _run(executor, tight, kind, query=query)
    assert "rows" not in output
    assert output["rows_ref"]["$ref"].startswith("artifact://values/default/sql/")
    assert output["rows_ref"]["content_type"] == "application/x-ndjson"
    assert (output["row_count"], output["columns"], output["truncated"]) == (
        3,
        ["id", "name", "price", "created"],
        False,
    )
    assert await _lines(tight, output["rows_ref"]) == expected

    # max_rows still holds, and truncation is reported.
    capped = await _run(executor, tight, kind, query=query, max_rows=2)
    assert (capped["row_count"], capped["truncated"]) == (2, True)
    assert await _lines(tight, capped["rows_ref"]) == expected[:2]

    # as_artifact: by reference however small.
    asked = await _run(executor, roomy, kind, query=f"{query} LIMIT 1", as_artifact=True)
    assert asked["row_count"] == 1 and await _lines(roomy, asked["rows_ref"]) == expected[:1]
    empty = await _run(executor, roomy, kind, query=f"{query} LIMIT 0", as_artifact=True)
    assert empty["row_count"] == 0 and await _lines(roomy, empty["rows_ref"]) == []

    # Without a store, as_artifact is a located error (nothing runs).
    refused = await _fails(executor, services, kind, query=query, as_artifact=True)
    assert refused.type == "ValidationError" and "as_artifact" in refused.message
