"""Agent runs in the console's execution view (issue #15), in Chromium against the embedded
stack with the offline echo model: a tool call that needs approval is edited and approved (the
tool gets the edited arguments), the agent's step timeline, "Fork from here" with an edited
output and the fork's link back; a rejected call, and a long delay shown as a timer."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from libs.cli.stack import Stack
from tests.console.conftest import Screenshot
from tests.integration.helpers import (
    create_workflow,
    events,
    get_execution,
    node,
    run,
    wait_final,
    wait_status,
)

# The echo model calls the tool on this directive, then answers with the tool's result.
PROMPT = '[[tool:calculator {"expression": "1+2"}]]'


def approval_workflow(name: str, then: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {
                "id": "agent",
                "type": "agent",
                "params": {
                    "model": "echo",
                    "prompt": PROMPT,
                    "tools": [{"name": "calculator", "requires_approval": True}],
                },
            },
            then,
        ],
        "edges": [{"source": "agent", "target": then["id"]}],
    }


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=headers) as http:
        yield http


async def waiting_for_approval(page: Page, api: httpx.AsyncClient, workflow_id: str) -> str:
    execution_id = await run(api, workflow_id)
    await wait_status(api, execution_id, "waiting", node_id="agent", timeout=30)
    await page.goto(f"/#/executions/{execution_id}")
    # The waiting node is selected without a click, its tool call shown for approval.
    panel = page.get_by_test_id("approval-panel")
    await expect(panel).to_be_visible()
    await expect(page.get_by_test_id("approval-tool")).to_have_text("calculator")
    shown = json.loads(await page.get_by_test_id("approval-arguments").input_value())
    assert shown == {"expression": "1+2"}
    return execution_id


def steps_of(execution: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = node(execution, "agent")["output"]["steps"]
    return steps


async def test_edit_and_approve_a_tool_call_see_the_steps_and_fork(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    done = {"id": "done", "type": "output", "params": {"value": "{{ agent.text }}"}}
    workflow_id = await create_workflow(api, approval_workflow("approve-edited", done))
    execution_id = await waiting_for_approval(page, api, workflow_id)

    arguments = page.get_by_test_id("approval-arguments")
    # Approving as is is refused once the arguments are edited: only "Approve edited" sends them.
    await arguments.fill('{"expression": "20+22"')
    await expect(page.get_by_test_id("approval-arguments-error")).to_contain_text("Invalid JSON")
    await expect(page.get_by_test_id("approval-approve-edited")).to_be_disabled()
    await arguments.fill('{"expression": "20+22"}')
    await expect(page.get_by_test_id("approval-approve")).to_be_disabled()
    await screenshot("approval")
    await page.get_by_test_id("approval-approve-edited").click()

    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "succeeded"
    )
    execution = await get_execution(api, execution_id)
    # The tool ran with the edited arguments (the calculator's answer is 42, not 3).
    result = next(step for step in steps_of(execution) if step["type"] == "tool_result")
    assert result["approval"] == "edit" and result["arguments"] == {"expression": "20+22"}
    assert "42" in str(result["result"]), result

    # The step timeline, in order, with the tool's arguments and result to expand.
    await page.get_by_test_id("exec-node-agent").click()
    steps = page.get_by_test_id("agent-steps").get_by_test_id("agent-step")
    # The node detail keeps the whole journal (model calls too) as the node's checkpoint.
    journal = node(execution, "agent")["checkpoint"]["journal"]
    types = [entry["type"] for entry in journal]
    assert types == ["model_call", "tool_call", "tool_result", "model_call", "final"], types
    await expect(steps).to_have_count(len(types))
    for position, kind in enumerate(types):
        await expect(steps.nth(position)).to_have_attribute("data-type", kind)
    tool_result = steps.nth(types.index("tool_result"))
    await expect(tool_result).to_have_attribute("data-tool", "calculator")
    await expect(tool_result).to_contain_text("edited")
    await tool_result.locator("summary").click()
    await expect(tool_result.get_by_test_id("agent-step-result")).to_contain_text("42")
    await expect(
        page.get_by_test_id("agent-steps").get_by_test_id("agent-step-child")
    ).to_have_count(0)
    await screenshot("steps")

    # Fork from the agent node with its answer edited: `done` runs again from it.
    await page.get_by_test_id("fork-open").click()
    editor = page.get_by_test_id("fork-output")
    output = json.loads(await editor.input_value())
    assert output == node(execution, "agent")["output"]
    await editor.fill(json.dumps({**output, "text": "forked answer"}))
    await page.get_by_test_id("fork-submit").click()
    await expect(page).not_to_have_url(re.compile(execution_id))
    await expect(page).to_have_url(re.compile(r"#/executions/[0-9a-f-]{36}$"))
    fork_id = page.url.rsplit("/", 1)[1]
    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "succeeded"
    )
    await expect(page.get_by_test_id("forked-from")).to_contain_text("/ agent")
    link = page.get_by_test_id("forked-from-link")
    await expect(link).to_have_attribute("href", f"#/executions/{execution_id}")
    forked = await get_execution(api, fork_id)
    assert forked["forked_from"] == {"execution_id": execution_id, "node_id": "agent"}
    assert node(forked, "done")["output"] == "forked answer"
    await link.click()
    await expect(page).to_have_url(re.compile(f"#/executions/{execution_id}$"))
    await expect(page.get_by_test_id("forked-from")).to_have_count(0)

    # Fork from one step edited: the tool's result, which the model then answers from.
    await page.get_by_test_id("exec-node-agent").click()
    result_step = page.locator('[data-testid="agent-step"][data-type="tool_result"]')
    await result_step.locator("summary").click()
    await result_step.get_by_test_id("step-fork-open").click()
    entry = result_step.get_by_test_id("step-fork-entry")
    assert json.loads(await entry.input_value()) == {"result": {"result": 42}}
    await entry.fill('{"result": {"result": 99}}')
    await result_step.get_by_test_id("step-fork-submit").click()
    await expect(page).not_to_have_url(re.compile(f"{execution_id}$"))
    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "succeeded"
    )
    step_fork = await get_execution(api, page.url.rsplit("/", 1)[1])
    assert step_fork["forked_from"] == {"execution_id": execution_id, "node_id": "agent"}
    assert "99" in node(step_fork, "done")["output"], step_fork


async def test_reject_a_tool_call_then_wait_on_a_timer(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    # A delay of 60 s (HEDDLE_DELAY_TIMER_MIN_S) or more is a timer of the workflow service.
    wait = {"id": "wait", "type": "delay", "params": {"seconds": 600}}
    workflow_id = await create_workflow(api, approval_workflow("reject-then-wait", wait))
    execution_id = await waiting_for_approval(page, api, workflow_id)

    await page.get_by_test_id("approval-reject").click()
    await page.get_by_test_id("approval-reason").fill("not today")
    await page.get_by_test_id("approval-reject-confirm").click()

    # The agent answers with the rejection; the delay then waits on its timer, selected.
    timer = page.get_by_test_id("timer-waiting")
    await expect(timer).to_be_visible(timeout=30_000)
    await expect(page.get_by_test_id("exec-node-wait")).to_have_attribute("data-status", "waiting")
    await expect(page.get_by_test_id("exec-node-wait")).to_contain_text("waiting on a timer")
    await expect(page.get_by_test_id("human-input-form")).to_have_count(0)
    execution = await get_execution(api, execution_id)
    result = next(step for step in steps_of(execution) if step["type"] == "tool_result")
    assert result["approval"] == "reject" and "not today" in str(result["result"]), result
    shown = await page.get_by_test_id("timer-resumes-at").get_attribute("data-at")
    assert shown, "no resume time shown"
    await expect(page.get_by_test_id("timer-remaining")).to_contain_text("min")
    await screenshot("timer")

    # The agent's timeline shows the rejected call.
    await page.get_by_test_id("exec-node-agent").click()
    rejected = page.locator('[data-testid="agent-step"][data-type="tool_result"]')
    await expect(rejected).to_have_attribute("data-tool", "calculator")
    await expect(rejected).to_contain_text("reject")
    await rejected.locator("summary").click()
    await expect(rejected.get_by_test_id("agent-step-result")).to_contain_text("not today")
    await page.get_by_test_id("cancel-execution").click()
    await expect(page.get_by_test_id("execution-status")).to_have_attribute(
        "data-status", "cancelled"
    )
    # The time shown is when the service's timer is due: timeout_s (600 s) after the node
    # began to wait (its node.waiting event).
    stream = await events(api, execution_id)
    since = next(e["ts"] for e in stream if e["type"] == "node.waiting" and e["node_id"] == "wait")
    due = dt.datetime.fromisoformat(since) + dt.timedelta(seconds=600)
    assert abs((dt.datetime.fromisoformat(shown) - due).total_seconds()) < 0.01, (shown, due)


async def test_a_chat_asks_for_approval_and_a_delegated_run_is_linked(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    agent = {"name": "careful", "model": "echo", "tools": ["calculator"]}
    refused = await api.post("/api/v1/agents", json={**agent, "approval_tools": ["current_time"]})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"] == [
        {"field": "approval_tools[0]", "message": "'current_time' is not one of tools"}
    ]
    created = await api.post("/api/v1/agents", json=agent)
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    assert created.json()["approval_tools"] == []

    # Marked "ask first" in the editor: a new version whose calculator calls wait.
    await page.goto(f"/#/agents/{agent_id}")
    await page.get_by_test_id("approval-calculator").check()
    await page.get_by_test_id("save-agent").click()
    await expect(page.get_by_test_id("agent-version")).to_contain_text("v2")
    stored = (await api.get(f"/api/v1/agents/{agent_id}")).json()
    assert (stored["tools"], stored["approval_tools"]) == (["calculator"], ["calculator"])
    await page.get_by_test_id("chat-message").fill(PROMPT)
    await page.get_by_test_id("chat-send").click()
    panel = page.get_by_test_id("chat-approval").get_by_test_id("approval-panel")
    await expect(panel).to_be_visible(timeout=30_000)
    await expect(panel.get_by_test_id("approval-tool")).to_have_text("calculator")
    await panel.get_by_test_id("approval-arguments").fill('{"expression": "6*7"}')
    await screenshot("chat-approval")
    await panel.get_by_test_id("approval-approve-edited").click()
    answer = page.get_by_test_id("chat-assistant").first
    await expect(answer).to_contain_text("echo: tool calculator returned", timeout=30_000)
    await expect(answer).to_contain_text("42")
    await expect(page.get_by_test_id("chat-approval")).to_have_count(0)

    # An agent that delegates to the registered one: its step links the child execution.
    helper = await api.post("/api/v1/agents", json={"name": "helper", "model": "echo"})
    assert helper.status_code == 201, helper.text
    boss = {
        "name": "boss",
        "nodes": [
            {
                "id": "agent",
                "type": "agent",
                "params": {
                    "model": "echo",
                    "prompt": '[[tool:helper {"task": "say hi"}]]',
                    "tools": [f"agent:{helper.json()['id']}"],
                },
            }
        ],
    }
    execution_id = await run(api, await create_workflow(api, boss))
    execution = await wait_final(api, execution_id, timeout=30)
    assert execution["status"] == "succeeded", execution
    result = next(
        e for e in node(execution, "agent")["checkpoint"]["journal"] if e["type"] == "tool_result"
    )
    child = result["child_execution_id"]
    assert (await get_execution(api, child))["status"] == "succeeded"
    await page.goto(f"/#/executions/{execution_id}")
    await page.get_by_test_id("exec-node-agent").click()
    link = page.get_by_test_id("agent-steps").get_by_test_id("agent-step-child")
    await expect(link).to_have_count(1)
    await expect(link).to_have_attribute("href", f"#/executions/{child}")
