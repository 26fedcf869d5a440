"""Schemathesis `--checks all` over the gateway's whole OpenAPI document (issue #12 item 10):
no 5xx for anything a client can send, every response as documented (status, content type,
headers, body), schema-violating requests refused, schema-valid ones accepted, `Allow` on
405, auth not ignored; then the stateful phase, over links inferred from `Location` headers
(create a workflow -> read, update, execute it...).

The stack (on the real PostgreSQL, where a NUL or an out-of-range integer used to be a 500)
runs in this process and event loop; schemathesis' own CLI runs as a subprocess against its
gateway over loopback HTTP, with a bounded example count.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from libs.cli.stack import Stack, start_stack

MAX_EXAMPLES = 5
SEED = 20261201
# Schema-valid requests that the service still refuses, for reasons no JSON Schema states:
# these operations may answer 422 to positive data (and only these).
SEMANTIC_422 = {
    "createWorkflow": "node types come from the node catalog; edges must name nodes",
    "updateWorkflow": "the same as createWorkflow",
    "executeWorkflow": "inputs are checked against the workflow's declared inputs",
    "createSchedule": "a cron expression's fields, an IANA zone, end_at after start_at",
    "updateSchedule": "the same as createSchedule",
    "previewSchedule": "a cron expression's fields, an IANA zone",
    "queryLogs": "page_token must be one the log service issued",
    "submitInput": "the answer is checked against the waiting node's form schema",
    "createPreset": "the node type comes from the catalog; params meet its params schema",
    "updatePreset": "the same as createPreset",
    "createWebhook": "the URL passes the outbound address policy (no private hosts)",
    "replaceWebhook": "the same as createWebhook",
}
CONFIG = """
[generation]
# U+0000 is refused with a 422 everywhere (tests/gateway/test_nul.py); the document says
# so in words, not as a pattern on every string.
allow-x00 = false
database = "none"

[phases.coverage]
# Undocumented methods get a 405 with `Allow` (allow_header_conformance): OPTIONS shows it on
# every path. This and no duplicated query parameters keep the run short.
unexpected-methods = ["OPTIONS"]
generate-duplicate-query-parameters = false

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "429"]
"""
OPERATION = """
[[operations]]
include-operation-id = "{operation_id}"
# {reason}
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "401", "403", "404", "409", "422", "429"
]
"""
# updateWorkflow takes createWorkflow's body, whose every keyword the coverage phase already
# walks (the slowest part of the run, a third of it per operation): fuzzing and the stateful
# phase still send it theirs.
SAME_BODY_AS_CREATE = "phases.coverage.enabled = false\n"


@pytest.fixture
async def pg_stack(pg_url: str) -> AsyncIterator[Stack]:
    running = await start_stack(
        {
            "database_url": pg_url,
            "http_allow_hosts": ["127.0.0.1"],
            "rate_limit_burst": 100_000,
            "rate_limit_per_s": 10_000,
        },
        ephemeral_ports=True,
    )
    try:
        yield running
    finally:
        await running.stop()


def _config_file(directory: Path) -> Path:
    path = directory / "schemathesis.toml"
    text = CONFIG + "".join(
        OPERATION.format(operation_id=operation_id, reason=reason)
        + (SAME_BODY_AS_CREATE if operation_id == "updateWorkflow" else "")
        for operation_id, reason in SEMANTIC_422.items()
    )
    path.write_text(text)
    return path


async def test_schemathesis_all_checks_find_no_server_error_and_no_contract_violation(
    pg_stack: Stack, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=pg_stack.gateway_url) as http:
        document = (await http.get("/openapi.json")).json()
    operation_ids = {
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
    }
    assert set(SEMANTIC_422) <= operation_ids, set(SEMANTIC_422) - operation_ids
    executable = Path(sys.executable).with_name("schemathesis")
    process = await asyncio.create_subprocess_exec(
        str(executable),
        "--config-file",
        str(_config_file(tmp_path)),
        "run",
        f"{pg_stack.gateway_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: Hypothesis' lambda-source cache is not thread-safe (a worker died of
        # "AST constructor recursion depth mismatch" with two).
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {pg_stack.admin_key}",
        # Prometheus' text format is not JSON; its own tests cover it.
        "--exclude-path",
        "/metrics",
        "--request-timeout",
        "30",
        "--no-color",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=105)
    finally:
        if process.returncode is None:  # timed out: leave no fuzzer behind
            process.kill()
            await process.wait()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-20_000:]
    # It ran every phase over every operation (but /metrics), and the stateful phase followed
    # links: a run that tested nothing would also exit 0.
    assert f"Tested: {len(operation_ids) - 1}" in report, report[-5_000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, report[-5_000:]
    assert "API Links:" in report and " 0 covered" not in report, report[-5_000:]
