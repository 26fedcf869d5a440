"""The console's lists (workflows, executions, schedules) and its sign-in, driven in Chromium
against the embedded stack; the data is made through the HTTP API as a client would."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route, expect

from libs.cli.stack import Stack
from tests.console.conftest import Screenshot
from tests.integration.helpers import create_workflow, run, wait_final, wait_status

SUCCEEDS = {
    "name": "nightly-report",
    "description": "Builds the nightly report",
    "nodes": [{"id": "sum", "type": "transform", "params": {"expression": "1 + 1"}}],
}
FAILS = {
    "name": "flaky-import",
    "nodes": [
        {
            "id": "explode",
            "type": "code",
            "params": {"language": "python", "source": "raise ValueError('boom')"},
        }
    ],
}
WAITS = {
    "name": "needs-approval",
    "nodes": [
        {
            "id": "ask",
            "type": "human_input",
            "params": {
                "prompt": "Go?",
                "schema": {"type": "object", "properties": {"go": {"type": "boolean"}}},
            },
        }
    ],
}


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=30) as http:
        yield http


def hash_of(page: Page) -> str:
    return page.url.split("#", 1)[1] if "#" in page.url else ""


async def test_workflow_list_shows_workflows_and_leads_to_them(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    await page.goto("/")
    empty = page.get_by_test_id("empty-state")
    await expect(empty).to_contain_text("No workflows yet")
    await expect(empty).to_contain_text("New workflow")

    report = await create_workflow(api, SUCCEEDS)
    flaky = await create_workflow(api, FAILS)
    doomed = await create_workflow(api, {**SUCCEEDS, "name": "old-draft"})
    await page.reload()
    table = page.get_by_test_id("workflow-list")
    await expect(table.locator("tbody tr")).to_have_count(3)
    row = page.get_by_test_id(f"workflow-row-{report}")
    await expect(row).to_contain_text("nightly-report")
    await expect(row).to_contain_text("Builds the nightly report")
    await expect(row).to_contain_text("v1")
    await expect(row).to_contain_text("just now")
    await screenshot("workflows")

    # Delete asks once more, in place; cancelling keeps the workflow.
    await page.get_by_test_id(f"delete-{doomed}").click()
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.get_by_test_id(f"workflow-row-{doomed}")).to_be_visible()
    await page.get_by_test_id(f"delete-{doomed}").click()
    await page.get_by_test_id(f"delete-{doomed}-confirm").click()
    await expect(page.get_by_test_id(f"workflow-row-{doomed}")).to_have_count(0)
    assert (await api.get(f"/api/v1/workflows/{doomed}")).status_code == 404

    await page.get_by_test_id(f"executions-{flaky}").click()
    await expect(page).to_have_url(re.compile(rf"#/executions\?workflow_id={flaky}$"))
    await expect(page.get_by_test_id("filter-workflow")).to_have_value(flaky)

    await page.get_by_test_id("nav-workflows").click()
    await page.get_by_test_id(f"run-{report}").click()
    await expect(page).to_have_url(re.compile(rf"#/workflows/{report}/run$"))

    await page.get_by_test_id("nav-workflows").click()
    await page.get_by_test_id("new-workflow").click()
    await expect(page).to_have_url(re.compile(r"#/workflows/new$"))

    await page.get_by_test_id("nav-workflows").click()
    await page.get_by_test_id(f"workflow-row-{report}").locator("td").nth(2).click()
    await expect(page).to_have_url(re.compile(rf"#/workflows/{report}$"))


async def test_execution_list_filters_by_status_and_workflow_in_the_url(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    report = await create_workflow(api, SUCCEEDS)
    flaky = await create_workflow(api, FAILS)
    succeeded = await run(api, report)
    failed = await run(api, flaky)
    assert (await wait_final(api, succeeded))["status"] == "succeeded"
    assert (await wait_final(api, failed))["status"] == "failed"

    await page.goto("/#/executions")
    ok_row = page.get_by_test_id(f"execution-row-{succeeded}")
    failed_row = page.get_by_test_id(f"execution-row-{failed}")
    await expect(ok_row).to_have_attribute("data-status", "succeeded")
    await expect(failed_row).to_have_attribute("data-status", "failed")
    await expect(ok_row).to_contain_text("nightly-report")
    await expect(failed_row).to_contain_text("flaky-import")
    await expect(failed_row.locator(".badge")).to_have_attribute("data-status", "failed")
    await expect(ok_row).to_contain_text(succeeded.replace("-", "")[:8])
    await expect(ok_row).to_contain_text("api")
    await screenshot("executions")

    await page.get_by_test_id("filter-status").select_option("failed")
    await expect(page).to_have_url(re.compile(r"#/executions\?status=failed$"))
    await expect(ok_row).to_have_count(0)
    await expect(failed_row).to_be_visible()

    await page.get_by_test_id("filter-status").select_option("")
    await page.get_by_test_id("filter-workflow").select_option(label="nightly-report")
    await expect(page).to_have_url(re.compile(rf"#/executions\?workflow_id={report}$"))
    await expect(failed_row).to_have_count(0)
    await expect(ok_row).to_be_visible()

    # The filters are a link: opened afresh, the same list.
    await page.goto(f"/#/executions?status=failed&workflow_id={report}")
    await page.reload()
    await expect(page.get_by_test_id("filter-status")).to_have_value("failed")
    await expect(page.get_by_test_id("filter-workflow")).to_have_value(report)
    await expect(page.get_by_test_id("empty-state")).to_contain_text("No executions match")
    await page.get_by_test_id("clear-filters").click()
    await expect(page).to_have_url(re.compile(r"#/executions$"))
    await expect(page.get_by_test_id("execution-list").locator("tbody tr")).to_have_count(2)

    await failed_row.click()
    await expect(page).to_have_url(re.compile(rf"#/executions/{failed}$"))


async def test_execution_list_refreshes_while_an_execution_runs(
    page: Page, api: httpx.AsyncClient
) -> None:
    waiting = await run(api, await create_workflow(api, WAITS))
    await wait_status(api, waiting, "waiting", node_id="ask")
    await page.goto("/#/executions")
    row = page.get_by_test_id(f"execution-row-{waiting}")
    await expect(row).to_have_attribute("data-status", "running")
    await expect(page.get_by_test_id("auto-refresh")).to_be_visible()

    answered = await api.post(
        f"/api/v1/executions/{waiting}/input", json={"node_id": "ask", "data": {"go": True}}
    )
    assert answered.status_code == 200, answered.text
    # No reload: the list polls while an execution is not final, then stops.
    await expect(row).to_have_attribute("data-status", "succeeded", timeout=10_000)
    await expect(page.get_by_test_id("auto-refresh")).to_have_count(0)


async def test_schedule_created_through_the_form_is_listed_then_deleted(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    report = await create_workflow(api, SUCCEEDS)
    await page.goto("/#/schedules")
    await expect(page.get_by_test_id("empty-state")).to_contain_text("No schedules yet")

    form = page.get_by_test_id("schedule-form")
    await form.get_by_test_id("schedule-workflow").select_option(label="nightly-report")
    await form.get_by_test_id("schedule-cron").fill("not cron")
    await expect(form.get_by_test_id("schedule-preview")).to_contain_text("Not a cron expression")
    await form.get_by_test_id("schedule-cron").fill("")
    await form.get_by_role("button", name="Weekdays at 09:00").click()
    await expect(form.get_by_test_id("schedule-cron")).to_have_value("0 9 * * 1-5")
    await form.get_by_test_id("schedule-timezone").fill("Europe/Oslo")
    await expect(form.get_by_test_id("schedule-preview").locator("li")).to_have_count(5)
    await form.get_by_test_id("schedule-name").fill("morning report")
    await form.get_by_test_id("schedule-inputs").fill('{"region": "north"}')
    await form.get_by_test_id("schedule-submit").click()

    await expect(page.get_by_test_id("schedule-notice")).to_contain_text("Schedule created")
    await expect(form).to_have_count(0)  # folded away once there is a schedule
    listed = (await api.get("/api/v1/schedules")).json()["items"]
    assert [(s["workflow_id"], s["cron"], s["timezone"]) for s in listed] == [
        (report, "0 9 * * 1-5", "Europe/Oslo")
    ]
    assert listed[0]["inputs"] == {"region": "north"}
    assert listed[0]["name"] == "morning report"
    schedule_id = listed[0]["id"]

    row = page.get_by_test_id(f"schedule-row-{schedule_id}")
    await expect(row).to_contain_text("nightly-report")
    await expect(row).to_contain_text("0 9 * * 1-5")
    await expect(row.get_by_test_id("fire-time")).to_have_count(3)
    await page.get_by_test_id("new-schedule").click()
    await expect(form.get_by_test_id("schedule-workflow")).to_be_visible()
    await screenshot("schedules")
    await form.get_by_role("button", name="Cancel").click()

    await row.get_by_test_id(f"schedule-enabled-{schedule_id}").click()
    await expect(row).to_contain_text("disabled")
    assert (await api.get(f"/api/v1/schedules/{schedule_id}")).json()["enabled"] is False
    await row.get_by_test_id(f"schedule-enabled-{schedule_id}").click()
    await expect(row.get_by_test_id("fire-time")).to_have_count(3)
    assert (await api.get(f"/api/v1/schedules/{schedule_id}")).json()["enabled"] is True

    await row.get_by_test_id(f"schedule-delete-{schedule_id}").click()
    await row.get_by_test_id(f"schedule-delete-{schedule_id}-confirm").click()
    await expect(row).to_have_count(0)
    await expect(page.get_by_test_id("empty-state")).to_be_visible()
    assert (await api.get("/api/v1/schedules")).json()["total"] == 0


async def no_dev_key(route: Route) -> None:
    """What /console/config answers a caller that is not on loopback."""
    await route.fulfill(
        status=200,
        content_type="application/json",
        body=json.dumps({"dev_api_key": None, "jaeger_url": None}),
    )


async def test_sign_in_with_an_api_key_and_sign_out(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    await page.route("**/console/config", no_dev_key)
    await page.goto("/")
    await expect(page.get_by_test_id("api-key")).to_be_visible()
    await expect(page.get_by_test_id("sign-in-dev")).to_have_count(0)
    await expect(page.get_by_test_id("sign-in")).to_be_disabled()
    await screenshot("sign-in")

    await page.get_by_test_id("api-key").fill(stack.admin_key)
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_test_id("nav-workflows")).to_be_visible()
    await expect(page.get_by_test_id("empty-state")).to_contain_text("No workflows yet")

    await page.get_by_test_id("sign-out").click()
    await expect(page.get_by_test_id("api-key")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('heddle.apiKey')") is None
    # Signed out stays signed out on reload.
    await page.reload()
    await expect(page.get_by_test_id("api-key")).to_be_visible()


async def test_a_refused_key_is_explained(page: Page, stack: Stack) -> None:
    """The sign-in check answers 200 either way (GET /console/session), so a wrong key shows
    the refusal without a single error in the browser's console (the fixture checks)."""
    await page.route("**/console/config", no_dev_key)
    await page.goto("/")
    await page.get_by_test_id("api-key").fill("hk_000000000000_not-a-key")
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_test_id("sign-in-error")).to_contain_text("refused")
    assert await page.evaluate("localStorage.getItem('heddle.apiKey')") is None

    await page.get_by_test_id("api-key").fill(stack.admin_key)
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_test_id("nav-workflows")).to_be_visible()


async def test_the_embedded_stack_signs_the_console_in_with_its_development_key(
    page: Page, stack: Stack
) -> None:
    await page.goto("/#/schedules")
    await expect(page.get_by_test_id("nav-schedules")).to_have_class("active")
    stored: Any = await page.evaluate("localStorage.getItem('heddle.apiKey')")
    assert stored == stack.admin_key
    assert hash_of(page) == "/schedules"
