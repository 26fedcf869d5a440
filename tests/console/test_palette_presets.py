"""Node presets in the editor's palette (Chromium): a tenant's saved parameter sets show under
their node type; a click adds a node of the type with the preset's params."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from libs.cli.stack import Stack
from tests.console.conftest import Screenshot

PARAMS = {"template": "Dear {{ inputs.name }}, thanks!"}


async def test_a_preset_under_its_type_adds_a_node_with_its_params(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as http:
        created = await http.post(
            "/api/v1/node-presets",
            json={"node_type": "template", "name": "thank-you note", "params": PARAMS},
        )
        assert created.status_code == 201, created.text
        preset_id = created.json()["id"]

        await page.goto("/#/workflows/new")
        under_type = page.get_by_test_id("presets-template")
        await expect(under_type).to_be_visible()
        preset = page.get_by_test_id(f"preset-{preset_id}")
        await expect(preset).to_have_text("↳ thank-you note")
        await screenshot("palette")
        await preset.click()
        await expect(page.get_by_test_id("editor-node-template_1")).to_be_visible()
        await expect(page.get_by_test_id("param-template")).to_have_value(PARAMS["template"])

        await page.get_by_test_id("workflow-name").fill("from a preset")
        await page.get_by_test_id("save-workflow").click()
        await expect(page.get_by_test_id("workflow-version")).to_have_text("v1")
        workflow_id = page.url.rsplit("/", 1)[1]
        saved = (await http.get(f"/api/v1/workflows/{workflow_id}")).json()
        [node] = saved["definition"]["nodes"]
        assert node["type"] == "template" and node["params"] == PARAMS
