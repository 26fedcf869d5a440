"""@node_type: JSON Schemas derived from type hints and pydantic models, ports, errors, and
the invocation a worker performs (params and inputs validated, output serialized)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import jsonschema
import pytest
from heddle_sdk import Context, NodeError, RecordingSink, Routed, node_type
from heddle_sdk.nodes import collect_node_types
from pydantic import BaseModel, Field


@node_type("acme.slugify", title="Slugify", category="text")
def slugify(text: str, separator: str = "-", max_length: int | None = None) -> str:
    """Turn text into a URL slug.

    More words that are not the palette's description."""
    slug = separator.join(text.lower().split())
    return slug[:max_length] if max_length else slug


class StatsParams(BaseModel):
    column: str = Field(description="The column to sum.")


class Table(BaseModel):
    rows: list[dict[str, Any]]
    extra: list[list[dict[str, Any]]] = []


class Stats(BaseModel):
    count: int
    total: float


@node_type("acme.stats", version="2", list_input_ports=["extra"], output_ports=["out", "empty"])
async def stats(params: StatsParams, inputs: Table, ctx: Context) -> Routed[Stats]:
    ctx.log.info("summing", rows=len(inputs.rows))
    ctx.heartbeat(0.5, "half way")
    ctx.stream("partial ")
    rows = inputs.rows + [row for table in inputs.extra for row in table]
    total = sum(float(row.get(params.column, 0)) for row in rows)
    return Routed(Stats(count=len(rows), total=total), ports=["out" if rows else "empty"])


def test_type_hints_describe_params_and_a_scalar_output_is_wrapped() -> None:
    spec = slugify.spec()
    assert spec["type"] == "acme.slugify"
    assert (spec["title"], spec["category"], spec["version"]) == ("Slugify", "text", "1")
    assert spec["description"] == "Turn text into a URL slug."
    params = spec["params_schema"]
    assert params["type"] == "object"
    assert params["required"] == ["text"]
    assert params["additionalProperties"] is False
    assert params["properties"]["separator"]["default"] == "-"
    assert spec["output_schema"] == {
        "type": "object",
        "properties": {"result": {"type": "string"}},
        "required": ["result"],
    }
    assert (spec["input_ports"], spec["output_ports"]) == (["in"], ["out"])
    jsonschema.Draft202012Validator.check_schema(params)
    validator = jsonschema.Draft202012Validator(params)
    assert validator.is_valid({"text": "a", "max_length": 3})
    assert not validator.is_valid({"text": "a", "colour": "red"})
    assert not validator.is_valid({"separator": "_"})


def test_models_describe_params_inputs_output_and_ports() -> None:
    spec = stats.spec()
    assert spec["version"] == "2"
    assert spec["params_schema"]["properties"]["column"]["description"] == "The column to sum."
    assert spec["input_ports"] == ["rows", "extra"]
    assert spec["list_input_ports"] == ["extra"]
    assert spec["output_ports"] == ["out", "empty"]
    assert spec["output_schema"]["properties"]["count"] == {"title": "Count", "type": "integer"}
    assert set(spec["input_schema"]["properties"]) == {"rows", "extra"}
    for schema in (spec["params_schema"], spec["input_schema"], spec["output_schema"]):
        jsonschema.Draft202012Validator.check_schema(schema)


async def test_invoke_validates_runs_and_serializes() -> None:
    sink = RecordingSink()
    result = await stats.invoke(
        {"column": "n"},
        {"rows": [{"n": 1}, {"n": 2}], "extra": [[{"n": 3}]]},
        Context(sink=sink),
    )
    assert result.output == {"count": 3, "total": 6.0}
    assert result.ports == ["out"]
    assert sink.logs == [("info", "summing", {"rows": 2})]
    assert sink.progress_reports == [(0.5, "half way")]
    assert sink.chunks == ["partial "]
    empty = await stats.invoke({"column": "n"}, {"rows": []}, Context())
    assert empty.ports == ["empty"]
    assert (await slugify.invoke({"text": "Hello Big World"}, {}, Context())).output == {
        "result": "hello-big-world"
    }


async def test_bad_params_and_inputs_are_non_retryable_located_errors() -> None:
    with pytest.raises(NodeError) as bad_params:
        await slugify.invoke({"text": 3}, {}, Context())
    assert bad_params.value.retryable is False
    assert bad_params.value.type == "InvalidParams"
    assert "text" in bad_params.value.message
    assert bad_params.value.details[0]["loc"] == ("text",)
    with pytest.raises(NodeError) as bad_inputs:
        await stats.invoke({"column": "n"}, {"rows": "not a list"}, Context())
    assert (bad_inputs.value.retryable, bad_inputs.value.type) == (False, "InvalidInputs")


async def test_a_plain_def_runs_in_a_thread_and_sees_cancellation() -> None:
    started = threading.Event()
    seen: list[bool] = []

    @node_type("acme.patient")
    def patient(ctx: Context) -> dict[str, Any]:
        started.set()
        while not ctx.cancelled:
            threading.Event().wait(0.01)
        seen.append(threading.current_thread() is threading.main_thread())
        return {}

    context = Context()
    task = asyncio.create_task(patient.invoke({}, {}, context))
    await asyncio.to_thread(started.wait, 5)
    context.cancel()
    await asyncio.wait_for(task, 5)
    assert seen == [False]


async def test_wrong_return_values_are_errors() -> None:
    @node_type("acme.liar")
    def liar() -> Stats:
        return "nope"  # type: ignore[return-value]

    @node_type("acme.untyped")
    def untyped() -> Any:
        return [1, 2]

    @node_type("acme.router", output_ports=["a"])
    def router() -> Routed[dict[str, Any]]:
        return Routed({}, ports=["b"])

    for bad in (liar, untyped, router):
        with pytest.raises(NodeError) as failure:
            await bad.invoke({}, {}, Context())
        assert failure.value.retryable is False, bad.type
        assert failure.value.type == "InvalidOutput"


def test_node_errors_default_to_retryable() -> None:
    assert NodeError("flaky upstream").retryable is True
    assert NodeError("bad", retryable=False, type="Refused").type == "Refused"


def test_names_and_signatures_that_cannot_be_described_are_refused() -> None:
    with pytest.raises(ValueError, match="namespaced"):
        node_type("slugify")
    with pytest.raises(TypeError, match="kwargs"):

        @node_type("acme.loose")
        def loose(**kwargs: Any) -> None: ...

    with pytest.raises(TypeError, match="either"):

        @node_type("acme.mixed")
        def mixed(params: StatsParams, other: int) -> None: ...

    with pytest.raises(ValueError, match="port"):
        node_type("acme.ports", output_ports=["bad port"])(lambda: None)


def test_collect_finds_types_in_modules_and_lists() -> None:
    import sys

    found = collect_node_types(sys.modules[__name__], [slugify])
    assert {t.type for t in found} >= {"acme.slugify", "acme.stats"}
    assert slugify("Hello World") == "hello-world"  # still callable as the function
