"""The workflow editor of the web console, driven in Chromium: build a graph by drag and drop,
live validation pinned on nodes, import/auto-layout/export, keyboard shortcuts. What the
editor saves is checked through the HTTP API."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import yaml
from playwright.async_api import Dialog, Download, FilePayload, Locator, Page, expect

from libs.cli.stack import Stack
from tests.console.conftest import Screenshot

IMPORTED_YAML = """\
name: imported-branches
description: A condition with two branches joined by a merge.
inputs:
  url: {type: string, required: true}
nodes:
  - id: start
    type: input
  - id: check
    type: condition
    params: {expression: "inputs.url | length > 0"}
  - id: greet
    type: template
    params: {template: "Fetching {{ inputs.url }}"}
  - id: fallback
    type: noop
  - id: done
    type: merge
    params: {mode: any}
edges:
  - {source: start, target: check}
  - {source: check, target: greet, source_port: "true"}
  - {source: check, target: fallback, source_port: "false"}
  - {source: greet, target: done}
  - {source: fallback, target: done}
"""


def node(page: Page, node_id: str) -> Locator:
    return page.get_by_test_id(f"editor-node-{node_id}")


async def open_editor(page: Page) -> None:
    await page.goto("/#/workflows/new")
    await expect(page.get_by_test_id("palette-input")).to_be_visible()
    await expect(page.get_by_test_id("canvas")).to_be_visible()


async def drop(page: Page, node_type: str, x: int, y: int) -> None:
    """HTML5 drag and drop of a palette item onto the canvas, at (x, y) of the canvas."""
    await page.drag_and_drop(
        f"[data-testid=palette-{node_type}]",
        "[data-testid=canvas]",
        target_position={"x": x, "y": y},
    )


async def center(locator: Locator) -> tuple[float, float]:
    box = await locator.bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


async def wait_still(page: Page) -> None:
    """Waits for the canvas to stop panning or zooming (the editor animates some moves)."""
    await page.wait_for_function(
        """() => new Promise((resolve) => {
            const viewport = document.querySelector(".react-flow__viewport");
            let last = viewport?.style.transform;
            let calm = 0;
            const tick = () => {
                const now = viewport?.style.transform;
                calm = now === last ? calm + 1 : 0;
                last = now;
                if (calm >= 5) resolve(true);
                else requestAnimationFrame(tick);
            };
            requestAnimationFrame(tick);
        })"""
    )


async def connect(page: Page, source: str, target: str) -> None:
    """Drags from the source node's output handle to the target node's input handle."""
    await wait_still(page)
    start = await center(node(page, source).locator(".react-flow__handle.source").first)
    end = await center(node(page, target).locator(".react-flow__handle.target").first)
    await page.mouse.move(*start)
    await page.mouse.down()
    await page.mouse.move(*end, steps=10)
    await page.mouse.up()


async def spread(page: Page, *node_ids: str) -> list[tuple[float, float]]:
    """Where nodes are on screen relative to the first one."""
    boxes = [await node(page, node_id).bounding_box() for node_id in node_ids]
    assert all(boxes)
    first = boxes[0]
    return [(box["x"] - first["x"], box["y"] - first["y"]) for box in boxes if box and first]


async def deselect(page: Page) -> None:
    """Clicks an empty spot of the canvas: the inspector shows the workflow."""
    await page.locator(".react-flow__pane").click(position={"x": 12, "y": 12})
    await expect(page.get_by_test_id("workflow-description")).to_be_visible()


async def expect_valid(page: Page) -> None:
    await expect(page.get_by_test_id("validation-summary")).to_have_attribute("data-valid", "true")


async def downloaded_text(download: Download) -> str:
    path = await download.path()
    return await asyncio.to_thread(path.read_text)


def api_client(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {stack.admin_key}"},
        timeout=10,
    )


async def test_build_a_workflow_by_drag_and_drop_save_versions_and_run(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    await open_editor(page)
    await expect(page.get_by_test_id("workflow-version")).to_have_text("new")
    await page.get_by_test_id("workflow-name").fill("greet")

    await drop(page, "input", 115, 200)
    await drop(page, "template", 372, 200)
    await drop(page, "output", 629, 200)
    for node_id in ("input_1", "template_1", "output_1"):
        await expect(node(page, node_id)).to_be_visible()
    # The last node dropped is selected: the form is built from the output type's schema.
    await expect(page.get_by_test_id("node-id")).to_have_value("output_1")
    await page.get_by_test_id("param-value").fill("{{ template_1.text }}")
    await node(page, "template_1").click()
    await expect(page.get_by_test_id("node-id")).to_have_value("template_1")
    await page.get_by_test_id("param-template").fill("Hello {{ inputs.name }}")

    await connect(page, "input_1", "template_1")
    await connect(page, "template_1", "output_1")
    await expect(page.locator(".react-flow__edge")).to_have_count(2)

    await deselect(page)
    await page.get_by_test_id("add-input").click()
    await page.get_by_test_id("input-name-0").fill("name")
    await expect_valid(page)

    await page.get_by_test_id("save-workflow").click()
    await expect(page.get_by_test_id("workflow-version")).to_have_text("v1")
    await expect(page).to_have_url(re.compile(r"#/workflows/[^/]+$"))
    workflow_id = page.url.rsplit("/", 1)[1]
    assert workflow_id != "new"
    # The editor of the saved workflow shows the same graph, with nothing left to save.
    await expect(page.get_by_test_id("save-workflow")).to_be_disabled()
    await expect(page.locator(".react-flow__edge")).to_have_count(2)
    await node(page, "template_1").click()
    await expect(page.get_by_test_id("param-template")).to_have_value("Hello {{ inputs.name }}")
    await screenshot("editor")

    # Renaming a node rewrites the edges and the templates that reference it; Ctrl+S saves v2.
    await page.get_by_test_id("node-id").fill("greeting")
    await page.get_by_test_id("node-id").press("Enter")
    await expect(node(page, "greeting")).to_be_visible()
    await page.keyboard.press("Control+s")
    await expect(page.get_by_test_id("workflow-version")).to_have_text("v2")

    # Opened afresh, the saved version reopens as drawn (the view may be zoomed to fit).
    drawn = await spread(page, "input_1", "greeting", "output_1")
    await page.reload()
    await expect(page.get_by_test_id("workflow-version")).to_have_text("v2")
    await expect(page.locator(".react-flow__edge")).to_have_count(2)
    await expect(page.get_by_test_id("workflow-name")).to_have_value("greet")
    await wait_still(page)
    reopened = await spread(page, "input_1", "greeting", "output_1")
    scale = reopened[-1][0] / drawn[-1][0]
    for (x, y), (x_again, y_again) in zip(drawn, reopened, strict=True):
        assert abs(x * scale - x_again) < 2 and abs(y * scale - y_again) < 2, (drawn, reopened)

    # Run saves pending changes first (v3), then opens the run form.
    await node(page, "output_1").click()
    await page.get_by_test_id("node-label").fill("Greeting out")
    await expect(node(page, "output_1")).to_contain_text("Greeting out")
    await page.get_by_test_id("run-workflow").click()
    await expect(page).to_have_url(re.compile(rf"#/workflows/{workflow_id}/run$"))
    await page.get_by_test_id("run-input-name").fill("Ada")
    await page.get_by_test_id("run-submit").click()
    await page.wait_for_url(re.compile(r"#/executions/[0-9a-f-]{36}$"))
    for key in ("input_1", "greeting", "output_1"):
        await expect(page.get_by_test_id(f"exec-node-{key}")).to_have_attribute(
            "data-status", "succeeded"
        )
    execution_id = page.url.rsplit("/", 1)[1]

    async with api_client(stack) as http:
        reply = await http.get(f"/api/v1/workflows/{workflow_id}")
        execution = (await http.get(f"/api/v1/executions/{execution_id}")).json()
    assert reply.status_code == 200, reply.text
    workflow = reply.json()
    assert workflow["version"] == 3
    definition = workflow["definition"]
    assert definition["name"] == "greet"
    assert definition["inputs"]["name"]["type"] == "string"
    nodes = {item["id"]: item for item in definition["nodes"]}
    assert set(nodes) == {"input_1", "greeting", "output_1"}
    assert [nodes[key]["type"] for key in ("input_1", "greeting", "output_1")] == [
        "input",
        "template",
        "output",
    ]
    assert nodes["greeting"]["params"] == {"template": "Hello {{ inputs.name }}"}
    assert nodes["output_1"]["params"] == {"value": "{{ greeting.text }}"}
    assert nodes["output_1"]["label"] == "Greeting out"
    assert all(isinstance(item["position"]["x"], int | float) for item in nodes.values())
    # Drawn left to right as dropped, and stored so that the graph reopens as drawn.
    xs = [nodes[key]["position"]["x"] for key in ("input_1", "greeting", "output_1")]
    assert xs == sorted(xs)
    edges = [(edge["source"], edge["target"]) for edge in definition["edges"]]
    assert edges == [("input_1", "greeting"), ("greeting", "output_1")]
    assert execution["workflow_version"] == 3
    assert execution["status"] == "succeeded"
    assert "Hello Ada" in json.dumps(execution["outputs"])


async def test_live_validation_marks_the_offending_node_and_clears_when_fixed(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    await open_editor(page)
    await page.get_by_test_id("workflow-name").fill("check")
    await page.get_by_test_id("palette-search").fill("upstream")
    await expect(page.get_by_test_id("palette-noop")).to_be_visible()  # "passes ... upstream"
    await expect(page.get_by_test_id("palette-llm")).to_have_count(0)
    await page.get_by_test_id("palette-search").fill("")
    await page.get_by_test_id("palette-noop").click()
    await page.get_by_test_id("palette-template").click()
    await expect(page.get_by_test_id("node-id")).to_have_value("template_1")
    await page.get_by_test_id("param-template").fill("Got {{ noop_1.value }}")

    issues = page.get_by_test_id("validation-issues")
    template = node(page, "template_1")
    await expect(template).to_have_attribute("data-invalid", "true")
    await expect(template).to_have_attribute("title", re.compile("which is not upstream of it"))
    await expect(issues.get_by_test_id("validation-issue")).to_have_count(1)
    await expect(issues).to_contain_text("node 'template_1' references 'noop_1'")
    await expect(node(page, "noop_1")).not_to_have_attribute("data-invalid", "true")

    # Saving is refused with the problems shown, and nothing reaches the create endpoint.
    await page.get_by_test_id("save-workflow").click()
    await expect(page.get_by_test_id("editor-notice")).to_contain_text("Not saved")
    async with api_client(stack) as http:
        listed = (await http.get("/api/v1/workflows")).json()
    assert listed["total"] == 0
    await screenshot("invalid")

    # A click on the problem selects its node.
    await deselect(page)
    await issues.get_by_test_id("validation-issue").click()
    await expect(page.get_by_test_id("node-id")).to_have_value("template_1")

    await connect(page, "noop_1", "template_1")
    await expect(template).not_to_have_attribute("data-invalid", "true")
    await expect(issues.get_by_test_id("validation-issue")).to_have_count(0)
    await expect_valid(page)

    # A param that breaks the type's schema is pinned to its field and to the node.
    await node(page, "template_1").click()
    await page.get_by_test_id("param-template").fill("")
    await expect(template).to_have_attribute("data-invalid", "true")
    await expect(page.get_by_test_id("inspector")).to_contain_text(
        "'template' is a required property"
    )

    # A JSON param reports a parse error inline; a switch grows one output port per case.
    await page.get_by_test_id("palette-switch").click()
    await expect(page.get_by_test_id("node-id")).to_have_value("switch_1")
    cases = page.get_by_test_id("param-cases")
    await cases.fill('["small", ')
    await expect(page.get_by_test_id("inspector")).to_contain_text("Invalid JSON")
    await cases.fill('["small", "large"]')
    await expect(page.get_by_test_id("inspector")).not_to_contain_text("Invalid JSON")
    handles = node(page, "switch_1").locator(".react-flow__handle.source")
    await expect(handles).to_have_count(4)
    assert await handles.evaluate_all("hs => hs.map(h => h.dataset.handleid)") == [
        "small",
        "large",
        "default",
        "out",
    ]


async def test_import_yaml_auto_layout_and_export_json_and_yaml(
    page: Page, screenshot: Screenshot
) -> None:
    await open_editor(page)
    await page.get_by_test_id("import-definition").click()
    await page.get_by_test_id("import-file").set_input_files(
        files=[
            FilePayload(
                name="branches.yaml", mimeType="application/yaml", buffer=IMPORTED_YAML.encode()
            )
        ]
    )
    await expect(page.get_by_test_id("import-text")).to_have_value(IMPORTED_YAML)
    await screenshot("import")
    await page.get_by_test_id("import-apply").click()
    await expect(page.get_by_test_id("workflow-name")).to_have_value("imported-branches")
    for node_id in ("start", "check", "greet", "fallback", "done"):
        await expect(node(page, node_id)).to_be_visible()
    await expect(page.locator(".react-flow__edge")).to_have_count(5)
    # Branch edges leave the condition's named ports.
    await expect(node(page, "check").locator(".react-flow__handle.source")).to_have_count(3)
    await expect_valid(page)

    # Scramble the layout (a node dragged away), then auto-layout puts it back in rank order.
    grab = await center(node(page, "start"))
    await page.mouse.move(*grab)
    await page.mouse.down()
    await page.mouse.move(grab[0] + 500, grab[1] + 150, steps=8)
    await page.mouse.up()
    await page.get_by_test_id("auto-layout").click()

    async def x_of(node_id: str) -> float:
        box = await node(page, node_id).bounding_box()
        assert box is not None
        return box["x"]

    await expect(node(page, "start")).to_be_in_viewport()
    ranks = [await x_of(node_id) for node_id in ("start", "check", "greet", "done")]
    assert ranks == sorted(ranks) and len(set(ranks)) == 4, ranks
    assert abs(await x_of("greet") - await x_of("fallback")) < 1
    await screenshot("imported")

    async with page.expect_download() as info:
        await page.get_by_test_id("export-json").click()
    download = await info.value
    assert download.suggested_filename == "imported-branches.json"
    exported_json = json.loads(await downloaded_text(download))

    async with page.expect_download() as info:
        await page.get_by_test_id("export-yaml").click()
    download = await info.value
    assert download.suggested_filename == "imported-branches.yaml"
    exported_yaml = yaml.safe_load(await downloaded_text(download))

    imported = yaml.safe_load(IMPORTED_YAML)
    for exported in (exported_json, exported_yaml):
        assert exported["name"] == imported["name"]
        assert exported["description"] == imported["description"]
        assert exported["inputs"] == imported["inputs"]
        assert [
            {key: item[key] for key in ("id", "type", "params") if key in item}
            for item in exported["nodes"]
        ] == [{"params": {}, **item} for item in imported["nodes"]]
        assert exported["edges"] == imported["edges"]
        assert all({"x", "y"} <= set(item["position"]) for item in exported["nodes"])


async def test_keyboard_delete_undo_redo_and_help(page: Page, screenshot: Screenshot) -> None:
    await open_editor(page)
    await page.get_by_test_id("workflow-name").fill("keys")
    await page.get_by_test_id("palette-input").click()
    await page.get_by_test_id("palette-noop").click()
    await connect(page, "input_1", "noop_1")
    edges = page.locator(".react-flow__edge")
    await expect(edges).to_have_count(1)

    # Backspace while typing in a field edits the field, it does not delete the node.
    await node(page, "noop_1").click()
    label = page.get_by_test_id("node-label")
    await label.fill("Pass")
    await label.press("Backspace")
    await expect(label).to_have_value("Pas")
    await expect(node(page, "noop_1")).to_contain_text("Pas")

    await node(page, "noop_1").click()
    await page.keyboard.press("Delete")
    await expect(node(page, "noop_1")).to_have_count(0)
    await expect(edges).to_have_count(0)

    await page.keyboard.press("Control+z")
    await expect(node(page, "noop_1")).to_be_visible()
    await expect(node(page, "noop_1")).to_contain_text("Pas")
    await expect(edges).to_have_count(1)

    await page.keyboard.press("Control+Shift+z")
    await expect(node(page, "noop_1")).to_have_count(0)
    await page.keyboard.press("Control+z")
    await expect(node(page, "noop_1")).to_be_visible()

    await page.keyboard.press("?")
    help_dialog = page.get_by_test_id("shortcut-help")
    await expect(help_dialog).to_be_visible()
    await expect(help_dialog).to_contain_text("Auto-layout")
    await screenshot("help")
    await page.keyboard.press("Escape")
    await expect(help_dialog).to_have_count(0)

    # L lays the graph out again: the node dragged below comes back in line.
    grab = await center(node(page, "noop_1"))
    await page.mouse.move(*grab)
    await page.mouse.down()
    await page.mouse.move(grab[0], grab[1] + 180, steps=6)
    await page.mouse.up()
    await page.keyboard.press("l")
    await wait_still(page)
    (_, input_y), (noop_x, noop_y) = await spread(page, "input_1", "noop_1")
    assert abs(noop_y - input_y) < 1 and noop_x > 0, (noop_x, noop_y)

    # Unsaved changes: an in-app link asks first; declining keeps the editor and the graph.
    questions: list[str] = []

    async def decline(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.dismiss()

    page.once("dialog", decline)
    await page.get_by_test_id("nav-workflows").click()
    await expect(node(page, "noop_1")).to_be_visible()
    assert questions and "unsaved changes" in questions[0]
    assert "#/workflows/new" in page.url

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.once("dialog", accept)
    await page.get_by_test_id("nav-workflows").click()
    await expect(page.get_by_test_id("new-workflow")).to_be_visible()
    await expect(node(page, "noop_1")).to_have_count(0)


def canvas_node(page: Page, node_id: str) -> Locator:
    """React Flow's wrapper of a node: it carries the node's position and canvas key."""
    return page.locator(".react-flow__node").filter(has=node(page, node_id))


async def position(page: Page, node_id: str) -> tuple[float, float]:
    """A node's position on the canvas (flow coordinates, whatever the zoom)."""
    x, y = await canvas_node(page, node_id).evaluate(
        "el => { const m = new DOMMatrixReadOnly(getComputedStyle(el).transform);"
        " return [m.e, m.f]; }"
    )
    return x, y


async def expect_at(page: Page, node_id: str, x: float, y: float) -> None:
    await expect(canvas_node(page, node_id)).to_have_css(
        "transform", f"matrix(1, 0, 0, 1, {x:g}, {y:g})"
    )


async def test_copy_paste_duplicate_and_arrow_moves(page: Page, screenshot: Screenshot) -> None:
    await open_editor(page)
    await page.get_by_test_id("palette-input").click()
    await page.get_by_test_id("palette-template").click()
    await expect(page.get_by_test_id("node-id")).to_have_value("template_1")
    template = page.get_by_test_id("param-template")
    await template.fill("Hi {{ input_1.name }}")
    await connect(page, "input_1", "template_1")
    nodes = page.locator(".react-flow__node")
    edges = page.locator(".react-flow__edge")
    await expect(edges).to_have_count(1)
    inspector = page.get_by_test_id("inspector")
    input_at = await position(page, "input_1")
    template_at = await position(page, "template_1")

    # Copy both nodes, paste: new ids, offset by (40, 40), the edge and the reference follow.
    await node(page, "input_1").click()
    await node(page, "template_1").click(modifiers=["Control"])
    await expect(inspector).to_contain_text("2 nodes selected")
    await page.keyboard.press("Control+c")
    await page.keyboard.press("Control+v")
    await expect(nodes).to_have_count(4)
    await expect(edges).to_have_count(2)
    await expect(inspector).to_contain_text("2 nodes selected")  # the pasted pair
    await expect(canvas_node(page, "input_2")).to_have_class(re.compile(r"\bselected\b"))
    await expect(canvas_node(page, "template_2")).to_have_class(re.compile(r"\bselected\b"))
    await expect_at(page, "input_2", input_at[0] + 40, input_at[1] + 40)
    await expect_at(page, "template_2", template_at[0] + 40, template_at[1] + 40)
    pasted_input = await canvas_node(page, "input_2").get_attribute("data-id")
    pasted_template = await canvas_node(page, "template_2").get_attribute("data-id")
    await expect(
        page.locator(
            f'.react-flow__edge[aria-label="Edge from {pasted_input} to {pasted_template}"]'
        )
    ).to_have_count(1)
    await screenshot("pasted")
    await page.keyboard.press("Escape")
    await node(page, "template_2").click()
    await expect(template).to_have_value("Hi {{ input_2.name }}")
    await node(page, "template_1").click()
    await expect(template).to_have_value("Hi {{ input_1.name }}")

    # The paste is one undo step.
    await page.keyboard.press("Control+z")
    await expect(nodes).to_have_count(2)
    await expect(edges).to_have_count(1)
    await expect(node(page, "input_2")).to_have_count(0)

    # Ctrl+D duplicates the selected node (its reference to a node not copied is kept).
    await page.keyboard.press("Escape")
    await node(page, "template_1").click()
    await page.keyboard.press("Control+d")
    await expect(nodes).to_have_count(3)
    await expect(page.get_by_test_id("node-id")).to_have_value("template_2")
    await expect(template).to_have_value("Hi {{ input_1.name }}")
    await expect(edges).to_have_count(1)
    await expect_at(page, "template_2", template_at[0] + 40, template_at[1] + 40)

    # Arrow keys move the selection (10 px, 50 px with Shift); one burst is one undo step.
    await page.keyboard.press("ArrowRight")
    await expect_at(page, "template_2", template_at[0] + 50, template_at[1] + 40)
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("Shift+ArrowDown")
    await expect_at(page, "template_2", template_at[0] + 60, template_at[1] + 90)
    await expect_at(page, "template_1", *template_at)
    await page.keyboard.press("Control+z")
    await expect_at(page, "template_2", template_at[0] + 40, template_at[1] + 40)
    await expect(nodes).to_have_count(3)

    await page.keyboard.press("?")
    await expect(page.get_by_test_id("shortcut-help")).to_contain_text("Duplicate")
