"""The editor helping its author (issue 16, items 8, 9 and 13), driven in Chromium: a fit that
shows the whole graph and a minimap, branches laid out in port order, cards that say which
tool or model they call, no error on a blank workflow, model and tool pickers with argument
forms from the tool's schema, `{{ }}` autocomplete from upstream output schemas, each node's
output of the last run, dark mode, and a canvas on a phone-sized screen."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from playwright.async_api import FloatRect, Locator, Page, Request, expect

from libs.cli.stack import Stack
from tests.console.conftest import Screenshot
from tests.console.test_editor import IMPORTED_YAML, drop, node, open_editor, wait_still
from tests.integration.helpers import create_workflow, run, wait_final


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=headers) as http:
        yield http


def chain(*node_ids: str) -> list[dict[str, str]]:
    return [{"source": a, "target": b} for a, b in itertools.pairwise(node_ids)]


async def open_workflow(page: Page, workflow_id: str, first_node: str) -> None:
    await page.goto(f"/#/workflows/{workflow_id}")
    await expect(node(page, first_node)).to_be_visible()
    await wait_still(page)


async def box(locator: Locator) -> FloatRect:
    found = await locator.bounding_box()
    assert found is not None
    return found


def inside(inner: FloatRect, outer: FloatRect) -> bool:
    return (
        inner["x"] >= outer["x"] - 0.5
        and inner["y"] >= outer["y"] - 0.5
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5
    )


async def select_node(page: Page, node_id: str) -> None:
    await node(page, node_id).click()
    await expect(page.get_by_test_id("node-id")).to_have_value(node_id)


# ------------------------------------------------------------------------ item 8: the canvas


def wide_graph(count: int) -> dict[str, Any]:
    """`count` nodes without positions: a chain, a condition with a branch of three nodes on
    each side, a merge, and the rest fanned out from it."""
    chain_ids = [f"step{i}" for i in range(1, max(2, min(8, count - 4)))]
    nodes: list[dict[str, Any]] = [{"id": i, "type": "noop"} for i in chain_ids]
    edges = chain(*chain_ids, "check")
    nodes.append({"id": "check", "type": "condition", "params": {"expression": "true"}})
    branch = max(1, min(3, (count - len(nodes) - 1) // 2))
    for side, port in (("no", "false"), ("yes", "true")):
        ids = [f"{side}{i}" for i in range(1, branch + 1)]
        nodes += [{"id": i, "type": "template", "params": {"template": side}} for i in ids]
        edges += [{"source": "check", "target": ids[0], "source_port": port}]
        edges += [*chain(*ids), {"source": ids[-1], "target": "join"}]
    nodes.append({"id": "join", "type": "merge", "params": {"mode": "any"}})
    for i in range(1, count - len(nodes) + 1):
        nodes.append({"id": f"fan{i}", "type": "noop"})
        edges.append({"source": "join", "target": f"fan{i}"})
    assert len(nodes) == count
    return {"name": f"{count} nodes", "nodes": nodes, "edges": edges}


async def expect_all_in_view(page: Page, node_ids: list[str]) -> None:
    canvas = await box(page.get_by_test_id("canvas"))
    outside = [
        node_id for node_id in node_ids if not inside(await box(node(page, node_id)), canvas)
    ]
    assert outside == [], f"outside the canvas after fit: {outside}"


async def test_fit_shows_every_node_of_a_30_node_graph_and_the_minimap_draws_them(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    definition = wide_graph(30)
    node_ids = [n["id"] for n in definition["nodes"]]
    assert len(node_ids) == 30
    workflow_id = await create_workflow(api, definition)
    await open_workflow(page, workflow_id, "step1")

    # Opened: laid out (no positions saved) and fitted.
    await screenshot("fitted")
    await expect_all_in_view(page, node_ids)
    minimap = page.locator(".react-flow__minimap")
    await expect(minimap).to_be_visible()
    await expect(minimap.locator(".react-flow__minimap-node")).to_have_count(30)

    # Zoomed in far, then F (fit) brings the whole graph back.
    for _ in range(6):
        await page.get_by_role("button", name="Zoom In").click()
    await wait_still(page)
    canvas = await box(page.get_by_test_id("canvas"))
    assert not inside(await box(node(page, "fan1")), canvas)
    await page.locator(".react-flow__pane").click(position={"x": 12, "y": 12})
    await page.keyboard.press("f")
    await wait_still(page)
    await expect_all_in_view(page, node_ids)


async def test_a_seven_node_graph_is_fitted_on_open(page: Page, api: httpx.AsyncClient) -> None:
    """The issue's case: a 7-node chain, fitted at 0.75 at least, had its end off-screen."""
    definition = wide_graph(7)
    workflow_id = await create_workflow(api, definition)
    await open_workflow(page, workflow_id, "step1")
    await expect_all_in_view(page, [n["id"] for n in definition["nodes"]])


async def test_auto_layout_puts_a_conditions_true_branch_above_false_and_names_its_always_port(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    # The false edge's target comes first in the definition: dagre alone drew it on top.
    workflow_id = await create_workflow(api, yaml.safe_load(IMPORTED_YAML))
    await open_workflow(page, workflow_id, "check")
    greet = await box(node(page, "greet"))  # the `true` branch
    fallback = await box(node(page, "fallback"))  # the `false` branch
    assert greet["y"] < fallback["y"]

    await page.get_by_test_id("auto-layout").click()
    await wait_still(page)
    greet = await box(node(page, "greet"))
    fallback = await box(node(page, "fallback"))
    assert greet["y"] < fallback["y"]

    # The condition's third port is taken whichever branch runs: it says so.
    ports = node(page, "check").locator(".ed-port")
    await expect(ports).to_have_text(["true", "false", "always"])
    always = node(page, "check").locator(".ed-port[data-port=out]")
    await expect(always).to_have_attribute("title", "output port 'out': " + ALWAYS_TITLE)
    await screenshot("branches")


ALWAYS_TITLE = "runs its targets after this node whichever branch is taken"


async def test_cards_say_which_tool_and_model_they_call(page: Page, api: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(
        api,
        {
            "name": "calls",
            "nodes": [
                {
                    "id": "calc",
                    "type": "tool",
                    "params": {"name": "calculator", "arguments": {"expression": "1+1"}},
                },
                {
                    "id": "write",
                    "type": "llm",
                    "params": {"model": ["echo", "spare"], "prompt": "x"},
                },
                {
                    "id": "helper",
                    "type": "agent",
                    "params": {"model": "echo", "prompt": "x", "tools": ["calculator"]},
                },
            ],
            "edges": chain("calc", "write", "helper"),
        },
    )
    await open_workflow(page, workflow_id, "calc")
    await expect(node(page, "calc").get_by_test_id("node-detail")).to_have_text("tool: calculator")
    await expect(node(page, "write").get_by_test_id("node-detail")).to_have_text(
        "model: echo → spare"
    )
    await expect(node(page, "helper").get_by_test_id("node-detail")).to_have_text(
        "model: echo · tools: calculator"
    )


async def test_a_blank_editor_shows_a_hint_and_no_validation_error(
    page: Page, screenshot: Screenshot
) -> None:
    validations: list[Request] = []

    def record(request: Request) -> None:
        if "/workflows/validate" in request.url:
            validations.append(request)

    page.on("request", record)
    await open_editor(page)
    summary = page.get_by_test_id("validation-summary")
    await expect(summary).to_contain_text("Nothing to check yet")
    # Well past the validation delay (400 ms): an untouched blank workflow is never sent.
    await asyncio.sleep(1.5)
    assert validations == []
    await expect(page.get_by_text("String should have")).to_have_count(0)
    await screenshot("blank")

    # Once something is written, the missing name is reported in plain words.
    await drop(page, "noop", 300, 200)
    await expect(summary).to_have_text("1 error")
    await expect(page.get_by_test_id("validation-issue")).to_contain_text(
        "The workflow needs a name"
    )
    assert len(validations) >= 1
    await expect(page.get_by_text("String should have")).to_have_count(0)


# ------------------------------------------------------------------------ item 9: pickers


async def saved_definition(api: httpx.AsyncClient, workflow_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    definition: dict[str, Any] = response.json()["definition"]
    return definition


async def test_model_and_tool_pickers_fed_by_the_services_and_an_argument_form(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(
        api,
        {
            "name": "pickers",
            "nodes": [
                {
                    "id": "calc",
                    "type": "tool",
                    "params": {"name": "calculator", "arguments": {"expression": "1+1"}},
                },
                {"id": "write", "type": "llm", "params": {"model": "echo", "prompt": "x"}},
                {"id": "helper", "type": "agent", "params": {"model": "echo", "prompt": "x"}},
            ],
            "edges": chain("calc", "write", "helper"),
        },
    )
    await open_workflow(page, workflow_id, "calc")

    # The model: a list of what GET /api/v1/ai/models offers.
    await select_node(page, "write")
    model = page.get_by_test_id("param-model")
    await expect(model).to_have_value("echo")
    await expect(model.locator("option")).to_contain_text(["Choose a model…", "echo · echo"])
    # Other…: a fallback chain, as JSON.
    await model.select_option(label=await model.locator("option").last.inner_text())
    custom = page.get_by_test_id("param-model-custom")
    await custom.fill('["echo", "spare"]')
    await expect(node(page, "write").get_by_test_id("node-detail")).to_have_text(
        "model: echo → spare"
    )

    # The tool: a list of GET /api/v1/tools; its arguments a form from the tool's schema.
    await select_node(page, "calc")
    tool = page.get_by_test_id("param-name")
    await expect(tool).to_have_value("calculator")
    await expect(tool.locator("option")).to_contain_text(
        ["Choose a tool…", "calculator", "current_time", "http_request", "json_query", "template"]
    )
    await expect(page.get_by_test_id("param-arguments")).to_have_count(0)
    expression = page.get_by_test_id("tool-arg-expression")
    await expect(expression).to_have_value("1+1")
    await expression.fill("2*(3+4)")
    await screenshot("tool-form")
    await tool.select_option("http_request")
    await expect(node(page, "calc").get_by_test_id("node-detail")).to_have_text(
        "tool: http_request"
    )
    # http_request's method is an enum: a list; its url a text field.
    await expect(page.get_by_test_id("tool-arg-method").locator("option")).to_contain_text(
        ["GET", "POST"]
    )
    # The argument left over from the calculator is flagged, not dropped silently.
    await expect(page.get_by_test_id("tool-arguments")).to_contain_text(
        "'http_request' takes no argument 'expression'."
    )
    await tool.select_option("calculator")
    await expect(page.get_by_test_id("tool-arg-expression")).to_have_value("2*(3+4)")
    # The raw JSON stays one click away.
    await page.get_by_test_id("tool-arguments-mode").click()
    await expect(page.get_by_test_id("param-arguments")).to_have_value('{"expression": "2*(3+4)"}')
    await page.get_by_test_id("tool-arguments-mode").click()

    # The agent's tools: a box per tool.
    await select_node(page, "helper")
    await page.get_by_test_id("agent-tool-calculator").check()
    await page.get_by_test_id("agent-tool-current_time").check()
    await expect(node(page, "helper").get_by_test_id("node-detail")).to_have_text(
        "model: echo · tools: calculator, current_time"
    )

    await expect(page.get_by_test_id("validation-summary")).to_have_attribute("data-valid", "true")
    await page.get_by_test_id("save-workflow").click()
    await expect(page.get_by_test_id("workflow-version")).to_have_text("v2")
    saved = {n["id"]: n["params"] for n in (await saved_definition(api, workflow_id))["nodes"]}
    assert saved["calc"] == {"name": "calculator", "arguments": {"expression": "2*(3+4)"}}
    assert saved["write"]["model"] == ["echo", "spare"]
    assert saved["helper"]["tools"] == ["calculator", "current_time"]


REFERENCES = {
    "name": "references",
    "inputs": {"city": {"type": "string", "required": True}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "fetch", "type": "http_request", "params": {"url": "http://127.0.0.1:9/x"}},
        {"id": "tpl", "type": "template", "params": {"template": "Hi"}},
        {"id": "later", "type": "template", "params": {"template": "after"}},
    ],
    "edges": chain("start", "fetch", "tpl", "later"),
}


async def test_references_autocomplete_from_inputs_and_upstream_output_schemas(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(api, REFERENCES)
    await open_workflow(page, workflow_id, "tpl")
    await select_node(page, "tpl")
    field = page.get_by_test_id("param-template")
    await field.click()
    await field.press("End")
    await field.press_sequentially(" {{ ")
    suggestions = page.get_by_test_id("reference-suggestion")
    paths = await suggestions.evaluate_all("items => items.map(item => item.dataset.path)")
    # The inputs, then the upstream nodes nearest first with their output schema's fields;
    # `later` runs after `tpl`, so it is not offered.
    assert paths == [
        "inputs.city",
        "fetch.status",
        "fetch.headers",
        "fetch.body",
        "fetch.json",
        "start",
    ]
    await screenshot("suggestions")

    await field.press_sequentially("fetch.j")
    await expect(suggestions).to_have_count(1)
    await field.press("Enter")
    await expect(field).to_have_value("Hi {{ fetch.json }}")
    await expect(page.get_by_test_id("reference-suggestions")).to_have_count(0)

    # A click works too, and completes a reference already closed.
    await field.fill("City: {{ inp }}")
    await field.press("End")
    for _ in range(3):
        await field.press("ArrowLeft")
    await field.press_sequentially("u")
    await suggestions.filter(has_text="inputs.city").click()
    await expect(field).to_have_value("City: {{ inputs.city }}")

    # The workflow's outputs may reference any node.
    await page.locator(".react-flow__pane").click(position={"x": 12, "y": 12})
    await page.get_by_test_id("add-output").click()
    value = page.get_by_test_id("output-value-0")
    await value.press_sequentially("{{ lat")
    await expect(suggestions).to_have_text([re_path("later")])
    await value.press("Tab")
    await expect(value).to_have_value("{{ later.text }}")


def re_path(path: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(path)}\.text")


# ------------------------------------------------------------------------ last run


async def test_a_click_on_a_node_shows_its_output_in_the_latest_run(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(
        api,
        {
            "name": "last-run",
            "inputs": {"name": {"type": "string", "required": True}},
            "nodes": [
                {
                    "id": "greet",
                    "type": "template",
                    "params": {"template": "Hello {{ inputs.name }}"},
                },
                {
                    "id": "calc",
                    "type": "tool",
                    "params": {"name": "calculator", "arguments": {"expression": "1/0"}},
                },
            ],
            "edges": chain("greet", "calc"),
        },
    )
    first = await run(api, workflow_id, {"name": "Grace"})
    await wait_final(api, first)
    latest = await run(api, workflow_id, {"name": "Ada"})
    await wait_final(api, latest)

    await open_workflow(page, workflow_id, "greet")
    await select_node(page, "greet")
    output = page.get_by_test_id("last-run-output")
    await expect(output).to_have_text(json.dumps({"text": "Hello Ada"}, indent=2))
    await expect(page.get_by_test_id("last-run-status")).to_have_text("succeeded")
    await expect(page.get_by_test_id("last-run-link")).to_have_attribute(
        "href", f"#/executions/{latest}"
    )
    await screenshot("output")

    await select_node(page, "calc")
    await expect(page.get_by_test_id("last-run-status")).to_have_text("failed")
    await expect(page.get_by_test_id("last-run-error")).to_be_visible()


async def test_a_workflow_never_run_says_so(page: Page, api: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(
        api,
        {"name": "never", "nodes": [{"id": "only", "type": "noop"}], "edges": []},
    )
    await open_workflow(page, workflow_id, "only")
    await select_node(page, "only")
    await expect(page.get_by_test_id("last-run")).to_contain_text("Not run yet")


# ------------------------------------------------------------------------ item 13


async def background(page: Page, selector: str) -> tuple[int, ...]:
    color: str = await page.locator(selector).first.evaluate(
        "element => getComputedStyle(element).backgroundColor"
    )
    return tuple(int(float(part)) for part in color[color.index("(") + 1 : -1].split(",")[:3])


def dark(rgb: tuple[int, ...]) -> bool:
    return sum(rgb) / 3 < 80


async def test_dark_mode_follows_the_system_setting_and_a_toggle(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(api, yaml.safe_load(IMPORTED_YAML))
    await page.emulate_media(color_scheme="dark")
    await open_workflow(page, workflow_id, "check")
    html = page.locator("html")
    await expect(html).to_have_attribute("data-theme", "dark")
    for selector in ["body", ".ed-toolbar", ".ed-inspector", ".ed-node", ".react-flow__minimap"]:
        assert dark(await background(page, selector)), selector
    await screenshot("dark")

    # The system switching to light is followed at once.
    await page.emulate_media(color_scheme="light")
    await expect(html).to_have_attribute("data-theme", "light")
    assert not dark(await background(page, ".ed-inspector"))

    # The toggle: system → dark → light → system, remembered across a reload.
    toggle = page.get_by_test_id("theme-toggle")
    await expect(toggle).to_have_attribute("data-choice", "system")
    await toggle.click()
    await expect(toggle).to_have_attribute("data-choice", "dark")
    await expect(html).to_have_attribute("data-theme", "dark")
    await page.reload()
    await expect(node(page, "check")).to_be_visible()
    await expect(html).to_have_attribute("data-theme", "dark")
    assert dark(await background(page, ".ed-inspector"))
    await toggle.click()
    await expect(html).to_have_attribute("data-theme", "light")
    await toggle.click()
    await expect(toggle).to_have_attribute("data-choice", "system")

    # The run pages too.
    await page.emulate_media(color_scheme="dark")
    execution_id = await run(api, workflow_id, {"url": "http://example.test"})
    await wait_final(api, execution_id)
    await page.goto(f"/#/executions/{execution_id}")
    await expect(page.get_by_test_id("exec-node-check")).to_be_visible()
    for selector in [".ev-side", ".ev-graph", ".ev-node", ".ev-json"]:
        assert dark(await background(page, selector)), selector
    await screenshot("dark-execution")
    await page.goto("/#/executions")
    await expect(page.locator("table.data")).to_be_visible()
    for selector in [".table-wrap", "table.data th"]:
        assert dark(await background(page, selector)), selector
    await screenshot("dark-executions")


async def test_at_390_px_the_canvas_shows_and_palette_and_inspector_are_drawers(
    page: Page, api: httpx.AsyncClient, screenshot: Screenshot
) -> None:
    workflow_id = await create_workflow(api, yaml.safe_load(IMPORTED_YAML))
    await page.set_viewport_size({"width": 390, "height": 844})
    await open_workflow(page, workflow_id, "check")
    canvas = await box(page.get_by_test_id("canvas"))
    assert canvas["width"] >= 370 and canvas["height"] >= 400, canvas
    await expect_all_in_view(page, ["start", "check", "greet", "fallback", "done"])
    await expect(page.get_by_test_id("palette-template")).not_to_be_visible()
    await expect(page.get_by_test_id("inspector")).not_to_be_visible()
    await screenshot("phone")

    # The palette opens as a drawer; adding a node closes it.
    await page.get_by_test_id("toggle-palette").click()
    await expect(page.get_by_test_id("palette-template")).to_be_visible()
    await screenshot("phone-palette")
    await page.get_by_test_id("palette-template").click()
    await expect(page.get_by_test_id("palette-template")).not_to_be_visible()
    await expect(node(page, "template_1")).to_be_visible()

    # The inspector too, showing the selected node.
    await page.get_by_test_id("toggle-inspector").click()
    await expect(page.get_by_test_id("inspector")).to_be_visible()
    await expect(page.get_by_test_id("node-id")).to_have_value("template_1")
    await screenshot("phone-inspector")
    await page.get_by_test_id("close-drawer").click()
    await expect(page.get_by_test_id("inspector")).not_to_be_visible()
