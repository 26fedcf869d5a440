"""The editor's version history panel in Chromium: the list (author, time, summary), a visual
diff of two versions node by node, and Restore (a rollback, checked through the API)."""

from __future__ import annotations

import httpx
from playwright.async_api import Page, expect

from libs.cli.stack import Stack
from tests.console.conftest import Screenshot

V1 = {"name": "history", "nodes": [{"id": "a", "type": "noop"}, {"id": "gone", "type": "noop"}]}
V2 = {
    "name": "history",
    "nodes": [
        {"id": "a", "type": "template", "params": {"template": "hello"}},
        {"id": "b", "type": "noop"},
    ],
    "edges": [{"source": "a", "target": "b"}],
}


async def test_history_lists_versions_diffs_two_and_restores(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as http:
        created = await http.post("/api/v1/workflows", json=V1)
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]
        saved = await http.put(f"/api/v1/workflows/{workflow_id}", json=V2)
        assert saved.status_code == 200, saved.text

        await page.goto(f"/#/workflows/{workflow_id}")
        await expect(page.get_by_test_id("workflow-version")).to_have_text("v2")
        await page.get_by_test_id("open-history").click()
        panel = page.get_by_test_id("history-panel")
        await expect(panel).to_be_visible()
        await expect(page.get_by_test_id("history-version-2")).to_contain_text(
            "+1 node (b); -1 node (gone); ~1 node (a); +1 edge"
        )
        await expect(page.get_by_test_id("history-version-1")).to_contain_text("key:")
        # v1 -> v2, node by node.
        await expect(page.get_by_test_id("history-diff-summary")).to_contain_text("v1 → v2")
        added = page.get_by_test_id("history-node-b")
        await expect(added).to_have_attribute("data-change", "added")
        await expect(page.get_by_test_id("history-node-gone")).to_have_attribute(
            "data-change", "removed"
        )
        changed = page.get_by_test_id("history-node-a")
        await expect(changed).to_have_attribute("data-change", "changed")
        await expect(changed).to_contain_text("hello")
        await expect(page.get_by_test_id("history-edges")).to_contain_text("a → b")
        await screenshot("diff")

        # Compare the other way round: from v2 to v1.
        await page.get_by_test_id("history-from").select_option("2")
        await page.get_by_test_id("history-to").select_option("1")
        await expect(page.get_by_test_id("history-node-gone")).to_have_attribute(
            "data-change", "added"
        )
        await expect(page.get_by_test_id("history-restore")).to_be_enabled()
        await page.get_by_test_id("history-restore").click()
        # The editor reloads on the new version, equal to v1.
        await expect(page.get_by_test_id("workflow-version")).to_have_text("v3")
        await expect(page.get_by_test_id("editor-node-gone")).to_be_visible()

        latest = (await http.get(f"/api/v1/workflows/{workflow_id}")).json()
        assert latest["version"] == 3
        assert [n["id"] for n in latest["definition"]["nodes"]] == ["a", "gone"]
        versions = (await http.get(f"/api/v1/workflows/{workflow_id}/versions")).json()
        assert versions["items"][0]["rollback_of"] == 1
