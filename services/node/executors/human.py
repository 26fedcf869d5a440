"""The human_input node: suspends the node until someone submits data."""

from __future__ import annotations

from typing import Any

import jsonschema

from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeError,
    NodeRequest,
    NodeResult,
    Services,
    object_schema,
)


def _location(path: Any) -> str:
    return "/" + "/".join(str(part) for part in path)


def validate_human_input(schema: dict[str, Any] | None, data: Any) -> list[str]:
    """Every problem of ``data`` against ``schema``, each located by JSON pointer; [] if valid.

    Used by the workflow service when data is submitted to a waiting human_input node.
    """
    if not schema:
        return []
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [f"schema {_location(exc.absolute_path)}: {exc.message}"]
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(data), key=lambda e: _location(e.absolute_path))
    return [f"{_location(error.absolute_path)}: {error.message}" for error in errors]


class HumanInputExecutor(Executor):
    spec = NodeTypeSpec(
        type="human_input",
        title="Human input",
        description="Waits until someone submits data matching a schema; the data becomes "
        "the node's output.",
        category="human",
        params_schema=object_schema(
            {
                "prompt": {
                    "type": "string",
                    "description": "What to ask (templated).",
                    "x-multiline": True,
                },
                "schema": {
                    "type": "object",
                    "default": {"type": "object"},
                    "description": "JSON Schema of the data to submit; editors build the form "
                    "from it.",
                },
                "timeout_s": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "How long to wait before the node fails; none: forever.",
                },
            },
            required=["prompt"],
        ),
        output_schema=object_schema({"data": {}}, required=["data"]),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        try:
            jsonschema.Draft202012Validator.check_schema(params["schema"])
        except jsonschema.SchemaError as exc:
            # Fail now rather than after someone has filled in a form nobody can validate.
            raise NodeError(
                "ValidationError",
                f"param 'schema' is not a valid JSON Schema: {exc.message}",
                retryable=False,
            ) from exc
        return NodeResult(
            waiting={
                "prompt": params["prompt"],
                "schema": params["schema"],
                "timeout_s": params.get("timeout_s"),
            }
        )
