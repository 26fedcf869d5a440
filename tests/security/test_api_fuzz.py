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
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from libs.cli.stack import Stack, start_stack

MAX_EXAMPLES = 5
HELLO = {
    "name": "hello",
    "inputs": {"name": {"type": "string", "default": "world"}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "Hello {{ inputs.name }}"}},
    ],
    "edges": [{"source": "start", "target": "greet"}],
}
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
    "executeBatch": "the items' idempotency keys must differ",
    "createAgent": "models and tools come from the ai and tool services' catalogs",
    "updateAgent": "the same as createAgent",
    "createKnowledgeBase": "chunk_overlap is at most half chunk_size; the embedding model exists",
    "addDocuments": "each document names exactly one of file_id or text; file ids are uploads",
    "uploadFile": "a file has at least one byte",
    "forkExecution": "from_node names a completed node; an edited output meets its schema; "
    "an edited agent step names a journal entry and its editable fields",
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

[phases.stateful.generation]
# Sequences of valid calls (create a workflow, then execute it, read the execution...), and
# enough of them that links get followed.
mode = "positive"
max-examples = 40

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


def _config_file(directory: Path, extra: str = "") -> Path:
    path = directory / "schemathesis.toml"
    text = (
        extra
        + CONFIG
        + "".join(
            OPERATION.format(operation_id=operation_id, reason=reason)
            + (SAME_BODY_AS_CREATE if operation_id == "updateWorkflow" else "")
            for operation_id, reason in SEMANTIC_422.items()
        )
    )
    path.write_text(text)
    return path


# Five runs, each on its own stack and within its own test's time limit (the phases together
# take longer than one test may on a busy machine): the coverage phase, the longest, in three
# parts of the paths; `paths` selects operations by path (a regex), None is all of them.
WORKFLOW_PATHS = "^/api/v1/workflows"
RUN_PATHS = "^/api/v1/(executions|schedules|batches)"
#: Paths left out of the fuzz, each for its reason: Prometheus' text format is not JSON (its
#: own tests cover it); a knowledge base's event stream is live and never ends by design (a
#: real base's would hold the fuzzer until it times out; tests/knowledge covers it, 404s too).
UNFUZZED = ("/metrics", "/api/v1/knowledge-bases/{kb_id}/events")

PHASE_GROUPS = [
    ("examples,coverage", WORKFLOW_PATHS, True),
    ("examples,coverage", RUN_PATHS, True),
    ("examples,coverage", "^/api/v1/(workflows|executions|schedules|batches)", False),
    ("fuzzing", None, True),
    ("stateful", None, True),
]


@pytest.mark.parametrize(("phases", "paths", "include"), PHASE_GROUPS)
async def test_schemathesis_all_checks_find_no_server_error_and_no_contract_violation(
    pg_stack: Stack, tmp_path: Path, phases: str, paths: str | None, include: bool
) -> None:
    async with httpx.AsyncClient(base_url=pg_stack.gateway_url) as http:
        document = (await http.get("/openapi.json")).json()
    operation_ids = {
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
    }
    assert set(SEMANTIC_422) <= operation_ids, set(SEMANTIC_422) - operation_ids
    selected = [
        operation
        for path, item in document["paths"].items()
        if path not in UNFUZZED and (paths is None or bool(re.search(paths, path)) == include)
        for operation in item.values()
    ]
    selection = (
        []
        if paths is None
        else ["--include-path-regex" if include else "--exclude-path-regex", paths]
    )
    extra = ""
    if phases == "stateful":
        # Random definitions rarely pass validation, so chains that start from one end at
        # once: a real workflow lets executeWorkflow succeed and its links be followed.
        extra = f'[parameters]\nworkflow_id = "{await _hello_workflow(pg_stack)}"\n'
    report = await _schemathesis(pg_stack, _config_file(tmp_path, extra), phases, selection)
    for phase in phases.split(","):
        assert f"✅ {phase.capitalize()}" in report, report[-5_000:]
    if phases == "stateful":
        # It followed links (the document's, and those inferred from Location headers).
        links = re.search(r"API Links: +(\d+) covered", report)
        assert links and int(links.group(1)) > 0, report[-5_000:]
    else:
        # Every selected operation: a run that tested nothing would also exit 0.
        assert f"Tested: {len(selected)}" in report, report[-5_000:]


async def _hello_workflow(stack: Stack) -> str:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    # The stack's first authenticated write (lazy imports and caches of every service, in this
    # one event loop) took over httpx's default 5 s on a loaded machine (the fresh clone).
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=30) as http:
        response = await http.post("/api/v1/workflows", json=HELLO)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _schemathesis(stack: Stack, config: Path, phases: str, selection: list[str]) -> str:
    """Schemathesis' report of a run with every check; fails unless it exits 0."""
    executable = Path(sys.executable).with_name("schemathesis")
    process = await asyncio.create_subprocess_exec(
        str(executable),
        "--config-file",
        str(config),
        "run",
        f"{stack.gateway_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        # One worker: Hypothesis' lambda-source cache is not thread-safe (a worker died of
        # "AST constructor recursion depth mismatch" with two).
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {stack.admin_key}",
        *(argument for path in UNFUZZED for argument in ("--exclude-path", path)),
        *selection,
        "--request-timeout",
        "30",
        "--no-color",
        cwd=config.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=100)
    finally:
        if process.returncode is None:  # timed out: leave no fuzzer behind
            process.kill()
            await process.wait()
    report = output.decode(errors="replace")
    failures = report.find("=== FAILURES ===")
    assert process.returncode == 0, (
        report[failures:][:20_000] if failures >= 0 else report[-20_000:]
    )
    return report
