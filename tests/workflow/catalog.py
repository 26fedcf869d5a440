"""A small node-type catalog for the workflow service's unit tests and benchmarks.

It mirrors the core and flow types of the node service's registry closely enough for
validation and planning, without importing the node service.
"""

from __future__ import annotations

from libs.common.node_types import NodeTypeSpec


def _object(properties: dict[str, object], required: list[str] | None = None) -> dict[str, object]:
    schema: dict[str, object] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def core_catalog() -> dict[str, NodeTypeSpec]:
    specs = [
        NodeTypeSpec(type="input", title="Input", params_schema=_object({})),
        NodeTypeSpec(
            type="output",
            title="Output",
            params_schema=_object({"value": {}}),
            list_input_ports=["in"],
        ),
        NodeTypeSpec(
            type="noop", title="No-op", params_schema=_object({"note": {"type": "string"}})
        ),
        NodeTypeSpec(
            type="template",
            title="Template",
            params_schema=_object({"template": {"type": "string"}}, ["template"]),
        ),
        NodeTypeSpec(
            type="transform",
            title="Transform",
            params_schema=_object({"expression": {"type": "string"}}, ["expression"]),
        ),
        NodeTypeSpec(
            type="condition",
            title="Condition",
            category="flow",
            params_schema=_object({"expression": {"type": "string"}}, ["expression"]),
            output_ports=["true", "false", "out"],
        ),
        NodeTypeSpec(
            type="switch",
            title="Switch",
            category="flow",
            params_schema=_object(
                {"expression": {"type": "string"}, "cases": {"type": "array"}}, ["expression"]
            ),
            output_ports=[],
            dynamic_ports="switch_cases",
        ),
        NodeTypeSpec(
            type="merge",
            title="Merge",
            category="flow",
            params_schema=_object({"mode": {"enum": ["all", "any"]}}),
            list_input_ports=["in"],
        ),
        NodeTypeSpec(
            type="delay",
            title="Delay",
            params_schema=_object(
                {"seconds": {"type": "number", "minimum": 0, "maximum": 86400}}, ["seconds"]
            ),
        ),
        NodeTypeSpec(
            type="http_request",
            title="HTTP request",
            category="integration",
            params_schema=_object(
                {
                    "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
                    "url": {"type": "string", "minLength": 1},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"type": ["string", "null"]},
                    "json": {},
                    "timeout_s": {"type": "number", "exclusiveMinimum": 0},
                },
                ["url"],
            ),
        ),
    ]
    return {spec.type: spec for spec in specs}
