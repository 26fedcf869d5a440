"""Data nodes: input, output, noop, template, transform."""

from __future__ import annotations

from typing import Any

from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeRequest,
    NodeResult,
    Services,
    evaluate_param,
    live_sources,
    object_schema,
)

EXPRESSION_PARAM = {
    "type": "string",
    "minLength": 1,
    "description": "An expression, with or without {{ }}, e.g. {{ fetch.json.items | length }}.",
}


class InputExecutor(Executor):
    spec = NodeTypeSpec(
        type="input",
        title="Input",
        description="Starts the workflow with the execution's inputs.",
        category="core",
        params_schema=object_schema(),
        output_schema={"type": "object", "description": "The execution's inputs."},
        input_ports=[],
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        return NodeResult(output=request.context.get("inputs", {}))


class OutputExecutor(Executor):
    spec = NodeTypeSpec(
        type="output",
        title="Output",
        description="Produces a value; without workflow 'outputs', output nodes give the "
        "execution's outputs.",
        category="core",
        params_schema=object_schema(
            {"value": {"description": "Any value; strings may use {{ }} templates."}},
            required=["value"],
        ),
        output_schema={"description": "The rendered value."},
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        return NodeResult(output=params["value"])


class NoopExecutor(Executor):
    spec = NodeTypeSpec(
        type="noop",
        title="No-op",
        description="Passes its inputs through: the upstream output when there is one, "
        "else a mapping of upstream node id to output.",
        category="core",
        params_schema=object_schema(),
        output_schema={"description": "The upstream output(s)."},
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        outputs = {source: request.context.get(source) for source in live_sources(request)}
        if len(outputs) == 1:
            return NodeResult(output=next(iter(outputs.values())))
        return NodeResult(output=outputs)


class TemplateExecutor(Executor):
    spec = NodeTypeSpec(
        type="template",
        title="Template",
        description="Renders a text template.",
        category="core",
        params_schema=object_schema(
            {
                "template": {
                    "type": "string",
                    "description": "Text with {{ }} placeholders, e.g. 'Hello {{ inputs.name }}'.",
                    "x-multiline": True,
                }
            },
            required=["template"],
        ),
        output_schema=object_schema({"text": {"type": "string"}}, required=["text"]),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        return NodeResult(output={"text": params["template"]})


class TransformExecutor(Executor):
    spec = NodeTypeSpec(
        type="transform",
        title="Transform",
        description="Computes a value from an expression.",
        category="core",
        params_schema=object_schema({"expression": EXPRESSION_PARAM}, required=["expression"]),
        output_schema=object_schema({"value": {}}, required=["value"]),
    )
    raw_params = ("expression",)

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        value = evaluate_param("expression", params["expression"], request.context)
        return NodeResult(output={"value": value})
