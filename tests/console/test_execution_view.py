"""The console's run form and live execution view, driven in Chromium against the embedded
stack: statuses from the SSE stream (exactly once, across reconnects), node details, human
input, and the control buttons."""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from libs.cli.stack import Stack
from tests.console.conftest import Screenshot, watched_page
from tests.integration.helpers import (
    create_workflow,
    get_execution,
    node,
    run,
    wait_final,
    wait_status,
)

JAEGER = "http://jaeger.test:16686"


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=headers) as http:
        yield http


def chain(*node_ids: str) -> list[dict[str, str]]:
    return [{"source": a, "target": b} for a, b in itertools.pairwise(node_ids)]


def delays(count: int, seconds: float) -> dict[str, Any]:
    ids = [f"wait{i}" for i in range(1, count + 1)]
    return {
        "name": f"{count} delays",
        "nodes": [{"id": i, "type": "delay", "params": {"seconds": seconds}} for i in ids],
        "edges": chain(*ids),
    }


def page_tolerating(
    browser: Browser, stack: Stack, expected: str
) -> contextlib.AbstractAsyncContextManager[Page]:
    """A page like the `page` fixture's, except that console errors containing `expected`
    are tolerated (these tests cause failed requests on purpose)."""
    return watched_page(browser, stack.gateway_url, tolerate=expected)


async def open_execution(page: Page, execution_id: str) -> None:
    await page.goto(f"/#/executions/{execution_id}")
    await expect(page.get_by_test_id("execution-status")).to_be_visible()


async def start_from_the_run_form(page: Page, workflow_id: str) -> str:
    """Start an execution from the console's run form (the app is already loaded when it
    starts, so a timing-sensitive test does not spend its first node on page load); its id."""
    await page.goto(f"/#/workflows/{workflow_id}/run")
    await expect(page.get_by_test_id("run-form")).to_be_visible()
    await page.get_by_test_id("run-submit").click()
    await page.wait_for_url(re.compile(r"#/executions/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


async def applied_seqs(page: Page) -> list[int]:
    seqs: list[int] = await page.evaluate("() => window.__heddleEvents ?? []")
    return seqs


async def expect_exactly_once(page: Page, api: httpx.AsyncClient, execution_id: str) -> None:
    """Once the stream is closed, the page applied every event of the execution once, in
    order: 1..last_seq, no gap, no duplicate."""
    await expect(page.get_by_test_id("stream-state")).to_have_attribute("data-state", "closed")
    last_seq = (await get_execution(api, execution_id))["last_seq"]
    assert last_seq > 0
    assert await applied_seqs(page) == list(range(1, last_seq + 1))
    rows = page.get_by_test_id("events-panel").get_by_test_id("event-row")
    await expect(rows).to_have_count(last_seq)


# ------------------------------------------------------------------------------- run form

GREETER = {
    "name": "greeter",
    "inputs": {
        "name": {"type": "string", "required": True, "description": "Who to greet"},
        "times": {"type": "integer", "default": 2},
        "loud": {"type": "boolean", "default": False},
        "tags": {"type": "array"},
    },
    "nodes": [
        {
            "id": "greet",
            "type": "template",
            "params": {"template": "Hello {{ inputs.name }} x{{ inputs.times }}"},
        },
        {"id": "write", "type": "llm", "params": {"model": "echo", "prompt": "{{ greet.text }}"}},
        {
            "id": "done",
            "type": "output",
            "params": {"value": {"text": "{{ write.text }}", "tags": "{{ inputs.tags }}"}},
        },
    ],
    "edges": chain("greet", "write", "done"),
}


async def test_run_form_starts_an_execution_that_is_followed_live(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(api, GREETER)
    await page.goto(f"/#/workflows/{workflow_id}/run")
    form = page.get_by_test_id("run-form")
    await expect(form).to_be_visible()
    # Typed fields, the required one marked, defaults prefilled.
    await expect(page.get_by_test_id("run-input-times")).to_have_value("2")
    await expect(page.get_by_test_id("run-input-times")).to_have_attribute("type", "number")
    await expect(page.get_by_test_id("run-input-loud")).not_to_be_checked()
    await expect(form.locator(".rf-required")).to_have_count(1)

    # Client-side checks first: nothing is sent while the form is wrong.
    await page.get_by_test_id("run-input-tags").fill("[1, 2")
    await page.get_by_test_id("run-submit").click()
    await expect(page.get_by_test_id("run-input-name-error")).to_have_text("Required.")
    await expect(page.get_by_test_id("run-input-tags-error")).to_contain_text("Invalid JSON")
    assert "/run" in page.url
    await screenshot("run-form")

    await page.get_by_test_id("run-input-name").fill("Ada")
    await page.get_by_test_id("run-input-times").fill("3")
    await page.get_by_test_id("run-input-tags").fill('["a", "b"]')
    await form.get_by_text("Options").click()
    await page.get_by_test_id("run-idempotency-key").fill("greet-ada-1")
    await page.get_by_test_id("run-submit").click()

    await page.wait_for_url(re.compile(r"#/executions/[0-9a-f-]{36}$"))
    execution_id = page.url.rsplit("/", 1)[1]
    for node_id in ("greet", "write", "done"):
        await expect(page.get_by_test_id(f"exec-node-{node_id}")).to_have_attribute(
            "data-status", "succeeded"
        )
    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "succeeded"
    )
    execution = await get_execution(api, execution_id)
    assert execution["inputs"] == {"name": "Ada", "times": 3, "loud": False, "tags": ["a", "b"]}
    assert execution["idempotency_key"] == "greet-ada-1"
    await expect(page.get_by_test_id("execution-outputs")).to_contain_text("echo: Hello Ada x3")
    await expect(page.get_by_test_id("execution-workflow")).to_have_text("greeter")
    # No Jaeger configured: no trace link.
    await expect(page.get_by_test_id("trace-link")).to_have_count(0)

    await page.get_by_test_id("exec-node-write").click()
    detail = page.get_by_test_id("node-detail")
    await expect(detail).to_be_visible()
    await expect(page.get_by_test_id("node-stream")).to_have_text("echo: Hello Ada x3")
    await expect(page.get_by_test_id("node-output")).to_contain_text('"model": "echo"')
    await expect(page.get_by_test_id("node-attempts")).to_contain_text("#1")
    await expect(page.get_by_test_id("node-attempts")).to_contain_text("succeeded")
    await expect(page.get_by_test_id("node-inputs")).to_contain_text("Hello Ada x3")
    await expect_exactly_once(page, api, execution_id)
    await screenshot("execution")


# ------------------------------------------------------------------------------- failure


def closed_port() -> int:
    """A local port nobody listens on (connections to it are refused: a retryable error)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def failing(port: int) -> dict[str, Any]:
    return {
        "name": "failing",
        "nodes": [
            {
                "id": "prepare",
                "type": "code",
                "params": {"source": "print('looking for the answer')\nresult = 6 * 7"},
            },
            {
                "id": "fetch",
                "type": "http_request",
                "params": {"method": "GET", "url": f"http://127.0.0.1:{port}/answer"},
                "retry": {"max_attempts": 2, "initial_delay_s": 0.05, "max_delay_s": 0.05},
                "timeout_s": 5,
                "on_error": "continue",
            },
            {
                "id": "compute",
                "type": "code",
                "params": {"language": "python", "source": "raise ValueError('no answer today')"},
            },
            {"id": "report", "type": "noop"},
        ],
        "edges": chain("prepare", "fetch", "compute", "report"),
    }


@pytest.mark.parametrize("stack", [{"jaeger_ui_url": JAEGER}], indirect=True)
async def test_a_failed_node_shows_its_error_and_the_trace_is_linked(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(api, failing(closed_port()))
    execution_id = await run(api, workflow_id)
    execution = await wait_final(api, execution_id)
    assert execution["status"] == "failed"

    await open_execution(page, execution_id)
    await expect(page.get_by_test_id("execution-status")).to_have_attribute("data-status", "failed")
    await expect(page.get_by_test_id("exec-node-prepare")).to_have_attribute(
        "data-status", "succeeded"
    )
    await expect(page.get_by_test_id("exec-node-report")).to_have_attribute(
        "data-status", "cancelled"
    )
    await expect(page.get_by_test_id("trace-link")).to_have_attribute(
        "href", f"{JAEGER}/trace/{execution['trace_id']}"
    )
    await expect(page.get_by_test_id("retry-execution")).to_be_enabled()
    await expect(page.get_by_test_id("cancel-execution")).to_be_disabled()

    await page.get_by_test_id("exec-node-compute").click()
    error = page.get_by_test_id("node-error")
    await expect(error).to_contain_text("CodeError")
    await expect(error).to_contain_text("ValueError: no answer today (line 1)")
    await expect(page.get_by_test_id("node-attempts").locator(".ev-attempt")).to_have_count(1)
    await expect(page.get_by_test_id("node-output")).to_have_count(0)

    # A retryable failure: every attempt with its own error.
    fetch = node(execution, "fetch")
    assert fetch["attempts"] == 2, fetch
    await page.get_by_test_id("exec-node-fetch").click()
    await expect(page.get_by_test_id("node-detail")).to_have_attribute("data-node", "fetch")
    await expect(page.get_by_test_id("node-error")).to_contain_text(fetch["error"]["message"])
    attempts = page.get_by_test_id("node-attempts").locator(".ev-attempt")
    await expect(attempts).to_have_count(2)
    for index, attempt in enumerate(fetch["attempt_history"]):
        await expect(attempts.nth(index)).to_contain_text(attempt["error"]["message"])
    await expect_exactly_once(page, api, execution_id)

    # The code's output is in the logs panel, which filters by node and level.
    logs = page.get_by_test_id("logs-panel")
    await expect(logs.get_by_test_id("log-record")).to_contain_text(["looking for the answer"])
    await logs.get_by_test_id("logs-node").select_option("compute")
    await expect(logs.get_by_test_id("log-record")).to_have_count(0)
    await logs.get_by_test_id("logs-node").select_option("prepare")
    await expect(logs.get_by_test_id("log-record")).to_have_count(1)
    await logs.get_by_test_id("logs-level").select_option("error")
    await expect(logs.get_by_test_id("log-record")).to_have_count(0)
    await logs.get_by_test_id("logs-level").select_option("info")
    await expect(logs.get_by_test_id("log-record")).to_have_count(1)
    await screenshot("failed")

    # Retry from failure: a new execution, which reuses what succeeded.
    await page.get_by_test_id("retry-execution").click()
    await page.wait_for_url(
        lambda url: (
            re.search(r"#/executions/[0-9a-f-]{36}$", url) is not None and execution_id not in url
        )
    )
    retry_id = page.url.rsplit("/", 1)[1]
    await expect(page.get_by_test_id("execution-status")).to_have_attribute("data-status", "failed")
    retried = await get_execution(api, retry_id)
    assert retried["retry_of"] == execution_id


# ------------------------------------------------------------------------------- human input

APPROVAL = {
    "name": "approval",
    "nodes": [
        {"id": "start", "type": "noop"},
        {
            "id": "ask",
            "type": "human_input",
            "params": {
                "prompt": "Who reviewed the release?",
                "schema": {
                    "type": "object",
                    "properties": {
                        "reviewer": {"type": "string", "minLength": 2},
                        "score": {"type": "integer", "minimum": 1, "maximum": 5},
                        "approved": {"type": "boolean"},
                    },
                    "required": ["reviewer"],
                },
            },
        },
        {
            "id": "done",
            "type": "output",
            "params": {
                "value": {"answer": "{{ ask.data.reviewer }}", "score": "{{ ask.data.score }}"}
            },
        },
    ],
    "edges": chain("start", "ask", "done"),
}


async def test_a_waiting_human_input_node_is_answered_from_its_form(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(api, APPROVAL)
    execution_id = await run(api, workflow_id)
    await open_execution(page, execution_id)

    await expect(page.get_by_test_id("exec-node-ask")).to_have_attribute("data-status", "waiting")
    # The waiting node is selected without a click.
    form = page.get_by_test_id("human-input-form")
    await expect(form).to_be_visible()
    await expect(form).to_contain_text("Who reviewed the release?")
    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "running"
    )

    # Checked in the browser against the schema before anything is sent.
    await page.get_by_test_id("human-input-reviewer").fill("x")
    await page.get_by_test_id("human-input-score").fill("9")
    await page.get_by_test_id("human-input-submit").click()
    await expect(page.get_by_test_id("human-input-reviewer-error")).to_contain_text(
        "At least 2 characters"
    )
    await expect(page.get_by_test_id("human-input-score-error")).to_contain_text("≤ 5")
    still = await get_execution(api, execution_id)
    assert [n["status"] for n in still["nodes"] if n["node_id"] == "ask"] == ["waiting"]
    await screenshot("waiting")

    await page.get_by_test_id("human-input-reviewer").fill("grace")
    await page.get_by_test_id("human-input-score").fill("4")
    await page.get_by_test_id("human-input-approved").check()
    await page.get_by_test_id("human-input-submit").click()

    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "succeeded"
    )
    await expect(page.get_by_test_id("exec-node-ask")).to_have_attribute("data-status", "succeeded")
    await expect(page.get_by_test_id("human-input-form")).to_have_count(0)
    await expect(page.get_by_test_id("node-output")).to_contain_text('"reviewer": "grace"')
    await page.get_by_test_id("exec-node-done").click()
    await expect(page.get_by_test_id("node-output")).to_contain_text('"answer": "grace"')
    execution = await get_execution(api, execution_id)
    assert execution["outputs"] == {"answer": "grace", "score": 4}
    await expect_exactly_once(page, api, execution_id)


async def test_a_schema_that_is_not_a_flat_object_is_answered_as_json(
    page: Page, api: httpx.AsyncClient
) -> None:
    definition = {
        "name": "list-answer",
        "nodes": [
            {
                "id": "ask",
                "type": "human_input",
                "params": {
                    "prompt": "Which items?",
                    "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                },
            }
        ],
        "edges": [],
    }
    execution_id = await run(api, await create_workflow(api, definition))
    await open_execution(page, execution_id)
    editor = page.get_by_test_id("human-input-json")
    await expect(editor).to_be_visible()
    await editor.fill("[]")
    await page.get_by_test_id("human-input-submit").click()
    await expect(page.get_by_test_id("human-input-json-error")).to_contain_text("At least 1")
    await editor.fill('["a", 2]')
    await page.get_by_test_id("human-input-submit").click()
    await expect(page.get_by_test_id("human-input-json-error")).to_contain_text("/1")
    await editor.fill('["a", "b"]')
    await page.get_by_test_id("human-input-submit").click()
    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "succeeded"
    )
    node = (await get_execution(api, execution_id))["nodes"][0]
    assert node["output"] == {"data": ["a", "b"]}


async def test_problems_only_the_server_finds_are_shown_on_their_field(
    browser: Browser, stack: Stack, api: httpx.AsyncClient
) -> None:
    definition = {
        "name": "batch-size",
        "nodes": [
            {
                "id": "ask",
                "type": "human_input",
                "params": {
                    "prompt": "Batch size?",
                    # multipleOf is left to the server's JSON Schema validation.
                    "schema": {
                        "type": "object",
                        "properties": {"size": {"type": "integer", "multipleOf": 5}},
                        "required": ["size"],
                    },
                },
            }
        ],
        "edges": [],
    }
    execution_id = await run(api, await create_workflow(api, definition))
    async with page_tolerating(browser, stack, "status of 422") as page:
        await open_execution(page, execution_id)
        await page.get_by_test_id("human-input-size").fill("7")
        await page.get_by_test_id("human-input-submit").click()
        await expect(page.get_by_test_id("human-input-size-error")).to_contain_text(
            "not a multiple of 5"
        )
        await expect(page.get_by_test_id("exec-node-ask")).to_have_attribute(
            "data-status", "waiting"
        )
        await page.get_by_test_id("human-input-size").fill("10")
        await page.get_by_test_id("human-input-submit").click()
        await expect(page.get_by_test_id("execution-status")).to_have_attribute(
            "data-status", "succeeded"
        )
    assert (await get_execution(api, execution_id))["nodes"][0]["output"] == {"data": {"size": 10}}


# ------------------------------------------------------------------------------- SSE resume


@pytest.mark.parametrize("stack", [{"event_stream_max_s": 1.0}], indirect=True)
async def test_the_view_resumes_a_stream_the_server_ends_without_gap_or_duplicate(
    page: Page, api: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(api, delays(6, 0.7))
    execution_id = await run(api, workflow_id)
    await open_execution(page, execution_id)

    # The gateway ends every stream after 1 s; the run takes over 4 s.
    await expect(page.get_by_test_id("stream-state")).to_have_attribute(
        "data-state", "reconnecting"
    )
    for i in range(1, 7):
        await expect(page.get_by_test_id(f"exec-node-wait{i}")).to_have_attribute(
            "data-status", "succeeded", timeout=20_000
        )
    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "succeeded"
    )
    await expect_exactly_once(page, api, execution_id)
    reconnects: int = await page.evaluate("() => window.__heddleReconnects")
    assert reconnects >= 2


@pytest.mark.parametrize("stack", [{"event_stream_max_s": 1.0}], indirect=True)
async def test_the_view_resumes_after_the_network_drops(
    browser: Browser, stack: Stack, api: httpx.AsyncClient
) -> None:
    async with page_tolerating(browser, stack, "net::ERR_INTERNET_DISCONNECTED") as page:
        workflow_id = await create_workflow(api, delays(5, 0.8))
        execution_id = await start_from_the_run_form(page, workflow_id)
        await expect(page.get_by_test_id("exec-node-wait1")).to_have_attribute(
            "data-status", "running"
        )
        await page.context.set_offline(True)
        # The open stream ends at the gateway's deadline; resuming then fails while offline.
        state = page.get_by_test_id("stream-state")
        await expect(state).to_have_attribute("data-state", "reconnecting")
        await expect(state).to_have_attribute("title", re.compile("Failed to fetch"))
        await page.context.set_offline(False)
        for i in range(1, 6):
            await expect(page.get_by_test_id(f"exec-node-wait{i}")).to_have_attribute(
                "data-status", "succeeded", timeout=20_000
            )
        await expect_exactly_once(page, api, execution_id)


# ------------------------------------------------------------------------------- control


async def test_cancel_pause_and_resume_from_the_header(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(
        api,
        {
            "name": "slow",
            "nodes": [
                # Long enough to be seen running and paused under load (1.5 s was not).
                {"id": "first", "type": "delay", "params": {"seconds": 5}},
                # Under HEDDLE_DELAY_TIMER_MIN_S (60 s): a running attempt, not a timer wait.
                {"id": "long", "type": "delay", "params": {"seconds": 50}},
            ],
            "edges": chain("first", "long"),
        },
    )
    execution_id = await start_from_the_run_form(page, workflow_id)
    status = page.get_by_test_id("execution-status")
    await expect(page.get_by_test_id("exec-node-first")).to_have_attribute("data-status", "running")
    await expect(page.get_by_test_id("resume-execution")).to_be_disabled()
    await expect(page.get_by_test_id("retry-execution")).to_be_disabled()

    # Pause lets `first` finish and dispatches nothing more until resume.
    await page.get_by_test_id("pause-execution").click()
    # `first` has up to its 5 s left to finish.
    await expect(status).to_have_attribute("data-status", "paused", timeout=15_000)
    await expect(page.get_by_test_id("exec-node-first")).to_have_attribute(
        "data-status", "succeeded", timeout=15_000
    )
    await expect(page.get_by_test_id("exec-node-long")).to_have_attribute("data-status", "pending")
    await expect(page.get_by_test_id("pause-execution")).to_be_disabled()
    await page.get_by_test_id("resume-execution").click()
    await expect(status).to_have_attribute("data-status", "running")
    await expect(page.get_by_test_id("exec-node-long")).to_have_attribute("data-status", "running")
    await screenshot("running")

    await page.get_by_test_id("cancel-execution").click()
    await expect(status).to_have_attribute("data-status", "cancelled")
    await expect(page.get_by_test_id("exec-node-long")).to_have_attribute(
        "data-status", "cancelled"
    )
    await expect(page.get_by_test_id("cancel-execution")).to_be_disabled()
    await expect(page.get_by_test_id("retry-execution")).to_be_enabled()
    execution = await wait_status(api, execution_id, "cancelled")
    assert execution["status"] == "cancelled"
    await expect_exactly_once(page, api, execution_id)


CHOICE = {
    "name": "choice",
    "nodes": [
        {
            "id": "ask",
            "type": "human_input",
            "params": {
                "prompt": "Ship it?",
                "schema": {
                    "type": "object",
                    "properties": {
                        "ship": {"type": "boolean"},
                        "notify": {"type": "boolean", "default": True},
                    },
                    "required": ["ship", "notify"],
                },
            },
        }
    ],
    "edges": [],
}


async def test_a_required_yes_no_is_chosen_explicitly_and_a_default_is_honoured(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    """Issue 16 item 12: a required boolean without a default started as `false`, so one
    click on Submit answered `false` for the user; now neither value is picked until the user
    picks one, and a boolean with a default starts at it."""
    workflow_id = await create_workflow(api, CHOICE)
    execution_id = await run(api, workflow_id)
    await open_execution(page, execution_id)
    await expect(page.get_by_test_id("human-input-form")).to_be_visible()

    choice = page.get_by_test_id("human-input-ship")
    await expect(choice).to_have_attribute("data-chosen", "none")
    await expect(page.get_by_test_id("human-input-ship-true")).not_to_be_checked()
    await expect(page.get_by_test_id("human-input-ship-false")).not_to_be_checked()
    await expect(page.get_by_test_id("human-input-notify")).to_be_checked()

    await page.get_by_test_id("human-input-submit").click()
    await expect(page.get_by_test_id("human-input-ship-error")).to_have_text(
        "Choose true or false."
    )
    still = await get_execution(api, execution_id)
    assert node(still, "ask")["status"] == "waiting"
    await screenshot("unchosen")

    await page.get_by_test_id("human-input-ship-false").check()
    await expect(page.get_by_test_id("human-input-ship-error")).to_have_count(0)
    await page.get_by_test_id("human-input-submit").click()
    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "succeeded"
    )
    execution = await get_execution(api, execution_id)
    assert node(execution, "ask")["output"] == {"data": {"ship": False, "notify": True}}
