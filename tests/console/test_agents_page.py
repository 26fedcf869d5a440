"""The console's Agents page in Chromium against the embedded stack: register an agent with the
model and tool pickers, chat with it in the playground (the tool step and the answer stream in,
the session carries on), save a new version and read the old one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Page, expect

from libs.cli.stack import Stack
from tests.console.conftest import Screenshot


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=30) as http:
        yield http


async def test_register_an_agent_chat_with_it_and_save_a_version(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    await page.goto("/")
    await page.get_by_test_id("nav-agents").click()
    await page.get_by_test_id("new-agent").click()
    await page.get_by_test_id("agent-name").fill("clock")
    await page.get_by_test_id("agent-instructions").fill("Tell the time.")
    await page.get_by_test_id("agent-model").select_option("echo")
    await page.get_by_test_id("tool-current_time").check()
    await page.get_by_test_id("save-agent").click()
    await expect(page).to_have_url(re.compile(r"#/agents/[0-9a-f-]{36}$"))
    agent_id = page.url.rsplit("/", 1)[1]
    await expect(page.get_by_test_id("agent-version")).to_contain_text("v1")
    stored = (await api.get(f"/api/v1/agents/{agent_id}")).json()
    assert (stored["model"], stored["tools"], stored["instructions"]) == (
        "echo",
        ["current_time"],
        "Tell the time.",
    )

    # The echo model calls the tool on this directive, then answers with its result.
    await page.get_by_test_id("chat-message").fill("[[tool:current_time]]")
    await page.get_by_test_id("chat-send").click()
    answer = page.get_by_test_id("chat-assistant").first
    await expect(answer).to_contain_text("echo: tool current_time returned")
    await expect(answer.get_by_test_id("chat-steps")).to_contain_text("current_time")
    await expect(page.get_by_test_id("chat-session")).to_contain_text("Session ")
    await page.get_by_test_id("chat-message").fill("thanks")
    await page.get_by_test_id("chat-send").click()
    await expect(page.get_by_test_id("chat-assistant").nth(1)).to_contain_text("echo: thanks")
    await screenshot("chat")
    sessions = (await api.get(f"/api/v1/agents/{agent_id}/sessions")).json()["items"]
    assert [s["message_count"] for s in sessions] == [4]

    await page.get_by_test_id("agent-instructions").fill("Tell the time, briefly.")
    await page.get_by_test_id("save-agent").click()
    await expect(page.get_by_test_id("agent-version")).to_contain_text("v2")
    await page.get_by_test_id("version-1").click()
    await expect(page.get_by_test_id("agent-instructions")).to_have_value("Tell the time.")
    await page.get_by_test_id("nav-agents").click()
    await expect(page.get_by_test_id(f"agent-row-{agent_id}")).to_contain_text("v2")
