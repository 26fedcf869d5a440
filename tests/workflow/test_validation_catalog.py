"""Validation that uses what the catalogs publish (issue #16 item 10): the node types' output
schemas, the tool service's tool names and input schemas, and the map's inline node.

The node types are the node service's own (their real output schemas), not the reduced
catalog of tests/workflow/catalog.py.
"""

from __future__ import annotations

from typing import Any

from services.node.registry import default_registry
from services.workflow.validation import ValidationReport, validate_definition

NODE_TYPES = {spec.type: spec for spec in default_registry().specs()}

#: As the tool service lists them: name -> input schema.
TOOLS: dict[str, dict[str, Any]] = {
    "calculator": {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    "kit.add": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
    "current_time": {"type": "object", "properties": {}},
}


def workflow(*nodes: dict[str, Any], edges: list[tuple[str, str]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "name": "w",
        "inputs": {"n": {"type": "integer"}, "tool": {"type": "string"}},
        "nodes": list(nodes),
        "edges": [{"source": s, "target": t} for s, t in edges],
    }


def check(raw: dict[str, Any], **options: Any) -> ValidationReport:
    return validate_definition(raw, NODE_TYPES, **options)


def errors(report: ValidationReport) -> list[tuple[str, str | None, str | None, str]]:
    return [(e.code, e.node_id, e.field, e.message) for e in report.errors]


# ---------------------------------------------------------------------------- output fields


def template_then(reference: str, **upstream: Any) -> dict[str, Any]:
    return workflow(
        {"id": "a", "type": "template", "params": {"template": "hi"}, **upstream},
        {"id": "b", "type": "template", "params": {"template": reference}},
        edges=[("a", "b")],
    )


def test_a_field_a_closed_output_schema_lacks_is_a_located_error() -> None:
    report = check(template_then("Say {{ a.txt }}"))
    assert errors(report) == [
        (
            "unknown_output_field",
            "b",
            "nodes[1].params.template",
            "nodes[1].params.template: node a has no output field txt; it has: text",
        )
    ]
    assert not report.valid


def test_fields_the_schema_has_and_every_syntax_to_reach_them_are_fine() -> None:
    for reference in ("{{ a.text }}", "{{ a['text'] | upper }}", "{{ a.text.upper() }}", "{{ a }}"):
        assert check(template_then(reference)).errors == [], reference


def test_nested_closed_schemas_and_workflow_outputs_are_checked_too() -> None:
    raw = workflow(
        {"id": "fetch", "type": "http_request", "params": {"url": "https://example.com"}},
        {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "{{ fetch.json.x }}"}},
        edges=[("fetch", "ask")],
    )
    # http's `json` and llm's `usage` are open: anything below them may exist
    raw["outputs"] = {"tokens": "{{ ask.usage.total_tokens }}", "code": "{{ fetch.statuss }}"}
    assert errors(check(raw)) == [
        (
            "unknown_output_field",
            None,
            "outputs.code",
            "outputs.code: node fetch has no output field statuss; it has: "
            "status, headers, body, json",
        )
    ]


def test_open_output_schemas_allow_any_field() -> None:
    # noop passes its inputs through, input is the execution's inputs, subworkflow its
    # child's outputs: no fixed set of fields
    for upstream in ("noop", "input", "subworkflow", "output"):
        params = {"subworkflow": {"workflow_id": "child"}, "output": {"value": 1}}.get(upstream, {})
        raw = workflow(
            {"id": "a", "type": upstream, "params": params},
            {"id": "b", "type": "template", "params": {"template": "{{ a.whatever.deep }}"}},
            edges=[("a", "b")],
        )
        assert check(raw).errors == [], upstream


def test_default_output_and_the_error_port_add_their_fields() -> None:
    kept = template_then("{{ a.fallback }} {{ a.text }}")
    kept["nodes"][0].update(on_error="continue", default_output={"fallback": "none"})
    assert check(kept).errors == []

    routed = template_then("{{ a.error.message }}")
    routed["nodes"][0]["on_error"] = "fail_branch"
    routed["edges"][0]["source_port"] = "error"
    assert check(routed).errors == []

    still_wrong = template_then("{{ a.txt }}")
    still_wrong["nodes"][0].update(on_error="continue", default_output={"fallback": "none"})
    assert [e.message for e in check(still_wrong).errors] == [
        "nodes[1].params.template: node a has no output field txt; it has: text, fallback"
    ]


# ---------------------------------------------------------------------------- tools


def tool_node(name: str, arguments: Any) -> dict[str, Any]:
    return {"id": "t", "type": "tool", "params": {"name": name, "arguments": arguments}}


def agent(tools: list[str]) -> dict[str, Any]:
    return {
        "id": "ag",
        "type": "agent",
        "params": {"model": "echo", "prompt": "hi", "tools": tools},
    }


def test_an_unknown_tool_name_is_a_located_error() -> None:
    report = check(workflow(tool_node("calculatr", {})), tools=TOOLS)
    assert errors(report) == [
        (
            "unknown_tool",
            "t",
            "nodes[0].params.name",
            "nodes[0].params.name: unknown tool 'calculatr'; the tool service has: "
            "calculator, current_time, kit.add",
        )
    ]
    report = check(workflow(agent(["calculator", "kit.ad"])), tools=TOOLS)
    assert [(e.code, e.field) for e in report.errors] == [
        ("unknown_tool", "nodes[0].params.tools[1]")
    ]
    assert "unknown tool 'kit.ad'" in report.errors[0].message


def test_a_tool_of_an_mcp_server_that_lists_nothing_now_is_only_a_warning() -> None:
    # 'gh' may be an MCP server that is down now and up at run time (which checks again)
    report = check(workflow(tool_node("gh.issues", {"q": 1})), tools=TOOLS)
    assert report.valid
    assert [(w.code, w.field) for w in report.warnings] == [
        ("unknown_tool", "nodes[0].params.name")
    ]
    assert "no tool of 'gh' is listed now" in report.warnings[0].message


def test_literal_arguments_are_checked_against_the_tools_schema() -> None:
    report = check(
        workflow(tool_node("calculator", {"expression": 7, "precision": 3})), tools=TOOLS
    )
    assert [(e.code, e.field) for e in report.errors] == [
        ("invalid_tool_arguments", "nodes[0].params.arguments"),
        ("invalid_tool_arguments", "nodes[0].params.arguments.expression"),
    ]
    messages = [e.message for e in report.errors]
    assert "('precision' was unexpected)" in messages[0]
    assert messages[1] == (
        "nodes[0].params.arguments.expression: 7 is not of type 'string' "
        "(input schema of tool 'calculator')"
    )
    # a draft-07 schema (as MCP servers publish them), a missing required argument
    report = check(workflow(tool_node("kit.add", {"a": 1})), tools=TOOLS)
    assert [e.message for e in report.errors] == [
        "nodes[0].params.arguments: 'b' is a required property (input schema of tool 'kit.add')"
    ]


def test_templated_arguments_are_checked_only_where_they_are_literals() -> None:
    templated = tool_node("kit.add", {"a": "{{ inputs.n }}", "b": "{{ inputs.n + 1 }}"})
    assert check(workflow(templated), tools=TOOLS).errors == []
    whole = tool_node("kit.add", "{{ inputs }}")
    assert check(workflow(whole), tools=TOOLS).errors == []
    mixed = tool_node("kit.add", {"a": "{{ inputs.n }}", "b": "two"})
    assert [e.field for e in check(workflow(mixed), tools=TOOLS).errors] == [
        "nodes[0].params.arguments.b"
    ]
    # a templated tool name is known at run time only
    assert check(workflow(tool_node("{{ inputs.tool }}", {"x": 1})), tools=TOOLS).errors == []


def test_a_tool_service_that_does_not_answer_gives_a_warning_not_an_error() -> None:
    raw = workflow(tool_node("anything", {"x": 1}), agent(["whatever"]))
    raw["nodes"][1]["id"] = "ag"
    report = check(raw, tools=None, tools_unavailable="the tool service did not answer")
    assert report.valid and report.errors == []
    assert [(w.code, w.node_id) for w in report.warnings] == [
        ("tools_not_checked", "t"),
        ("tools_not_checked", "ag"),
    ]
    # without a tool catalog at all (no tool service configured): neither
    assert check(raw).warnings == []


def test_a_maps_inline_tool_node_is_checked_too() -> None:
    raw = workflow(
        {
            "id": "m",
            "type": "map",
            "params": {
                "items": [1, 2],
                "node": {"type": "tool", "params": {"name": "nope", "arguments": {}}},
            },
        }
    )
    assert [(e.code, e.field) for e in check(raw, tools=TOOLS).errors] == [
        ("unknown_tool", "nodes[0].params.node.params.name")
    ]


# ---------------------------------------------------------------------------- map


def test_a_maps_inline_node_may_carry_an_id() -> None:
    raw = workflow(
        {
            "id": "m",
            "type": "map",
            "params": {
                "items": [1, 2],
                "node": {"id": "square", "type": "transform", "params": {"expression": "item"}},
            },
        }
    )
    report = check(raw)
    assert report.errors == []
    assert report.valid
