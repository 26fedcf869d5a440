from __future__ import annotations

import time

import pytest

from services.node.executors.base import NodeError, with_port_lists
from services.node.registry import default_registry
from tests.node.conftest import RunNode, make_request


async def test_input_outputs_the_execution_inputs(run_node: RunNode) -> None:
    result = await run_node("input", context={"inputs": {"url": "https://x"}})
    assert result.output == {"url": "https://x"}
    assert result.active_ports is None


async def test_output_renders_its_value_natively(run_node: RunNode) -> None:
    result = await run_node(
        "output",
        {"value": {"summary": "{{ llm1.text }}", "n": "{{ llm1.n }}", "fixed": [1, True]}},
        context={"llm1": {"text": "hi", "n": 3}},
    )
    assert result.output == {"summary": "hi", "n": 3, "fixed": [1, True]}


async def test_noop_passes_one_input_through_and_maps_several(run_node: RunNode) -> None:
    context = {"a": {"x": 1}, "b": [2]}
    one = await run_node("noop", context=context, inputs=[("a", None, None)])
    assert one.output == {"x": 1}
    several = await run_node(
        "noop", context=context, inputs=[("b", None, None), ("a", "out", None)]
    )
    assert several.output == {"b": [2], "a": {"x": 1}}


async def test_template_renders_text(run_node: RunNode) -> None:
    result = await run_node(
        "template",
        {"template": "Hello {{ inputs.name }}!"},
        context={"inputs": {"name": "Ada"}},
    )
    assert result.output == {"text": "Hello Ada!"}


async def test_template_of_one_structured_value_is_json_text(run_node: RunNode) -> None:
    result = await run_node("template", {"template": "{{ a }}"}, context={"a": {"k": [1]}})
    assert result.output == {"text": '{"k": [1]}'}


async def test_transform_evaluates_with_or_without_braces(run_node: RunNode) -> None:
    context = {"fetch": {"json": {"items": [1, 2, 3]}}}
    braced = await run_node(
        "transform", {"expression": "{{ fetch.json['items'][1] }}"}, context=context
    )
    bare = await run_node(
        "transform", {"expression": "fetch.json['items'][2] * 2"}, context=context
    )
    assert braced.output == {"value": 2}
    assert bare.output == {"value": 6}


@pytest.mark.parametrize(("value", "port"), [(5, "true"), (0, "false")])
async def test_condition_activates_one_branch(run_node: RunNode, value: int, port: str) -> None:
    result = await run_node(
        "condition", {"expression": "{{ x.n > 1 }}"}, context={"x": {"n": value}}
    )
    assert result.output == {"result": port == "true"}
    assert result.active_ports == [port, "out"]


@pytest.mark.parametrize(
    ("value", "port"),
    [("b", "b"), (2, "2"), ("2", "2"), (True, "True"), ("zzz", "default")],
)
async def test_switch_picks_the_first_equal_case(
    run_node: RunNode, value: object, port: str
) -> None:
    result = await run_node(
        "switch",
        {"expression": "x.v", "cases": ["a", "b", 2, True]},
        context={"x": {"v": value}},
    )
    assert result.output == {"value": value}
    assert result.active_ports == [port, "out"]


async def test_merge_collects_live_inputs_in_edge_order(run_node: RunNode) -> None:
    context = {"a": 1, "b": {"two": 2}, "c": 3}
    result = await run_node(
        "merge",
        {"mode": "any"},
        context=context,
        inputs=[("c", None, None), ("a", "true", "in"), ("c", "out", None)],
    )
    assert result.output == {"items": [3, 1]}


async def test_merge_defaults_to_mode_all(run_node: RunNode) -> None:
    result = await run_node(
        "merge",
        {},
        context={"a": 1, "b": 2},
        inputs=[("b", None, None), ("a", None, "in")],
    )
    assert result.output == {"items": [2, 1]}


def test_list_input_ports_are_exposed_in_the_context() -> None:
    request = make_request(
        "merge", context={"a": 1, "b": 2}, inputs=[("b", None, None), ("a", None, "in")]
    )
    prepared = with_port_lists(request, default_registry().get("merge").spec)
    assert prepared.context["ports"] == {"in": [2, 1]}
    # Types without list ports see the context unchanged.
    plain = with_port_lists(request, default_registry().get("noop").spec)
    assert "ports" not in plain.context


async def test_delay_sleeps_for_its_rendered_seconds(run_node: RunNode) -> None:
    started = time.monotonic()
    result = await run_node("delay", {"seconds": "{{ inputs.s }}"}, context={"inputs": {"s": 0.05}})
    assert result.output == {"waited_s": 0.05}
    assert 0.04 < time.monotonic() - started < 1


async def test_broken_template_fails_naming_the_param(run_node: RunNode) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("output", {"value": "{{ 1 + }}"})
    assert caught.value.type == "ExpressionError"
    assert not caught.value.retryable
    assert "'value'" in caught.value.message
    assert caught.value.details == {"param": "value"}


async def test_rendered_params_are_checked_against_the_schema(run_node: RunNode) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("delay", {"seconds": "{{ inputs.s }}"}, context={"inputs": {"s": "soon"}})
    assert caught.value.type == "ValidationError"
    assert "seconds" in caught.value.message
    with pytest.raises(NodeError, match="Additional properties"):
        await run_node("template", {"template": "x", "tempalte": "typo"})
