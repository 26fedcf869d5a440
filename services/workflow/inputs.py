"""Checking an execution's inputs against the definition, and human input against its schema."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from libs.common.artifacts import REF_SCHEME, is_ref
from libs.common.definition import WorkflowDefinition
from libs.common.errors import InvalidArgument

_FILE_REF = REF_SCHEME + "files/"
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def validate_inputs(definition: WorkflowDefinition, inputs: Any) -> dict[str, Any]:
    """The inputs with defaults applied; InvalidArgument listing every problem otherwise."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise InvalidArgument("inputs must be a JSON object", details=[{"field": "inputs"}])
    problems: list[dict[str, str]] = []
    resolved = dict(inputs)
    for name, spec in definition.inputs.items():
        if name not in resolved:
            if spec.default is not None:
                resolved[name] = spec.default
            elif spec.required:
                problems.append({"field": f"inputs.{name}", "message": "required input missing"})
            continue
        value = resolved[name]
        if spec.type == "file":
            if not (is_ref(value) and str(value.get("$ref", "")).startswith(_FILE_REF)):
                problems.append(
                    {
                        "field": f"inputs.{name}",
                        "message": "expected a file id (of a file uploaded to /api/v1/files)",
                    }
                )
            continue
        if is_ref(value) and value.get("inline") in ("text", "json"):
            # A large input the gateway stored by reference (the claim check): checked as
            # what it stands for, a string ("text") or an object or array ("json").
            text = value["inline"] == "text"
            if spec.type == "string" if text else spec.type in ("object", "array"):
                continue
            value = "" if text else {}
        expected = _JSON_TYPES.get(spec.type)
        wrong_bool = isinstance(value, bool) and spec.type in ("number", "integer")
        if expected is not None and (not isinstance(value, expected) or wrong_bool):
            problems.append(
                {
                    "field": f"inputs.{name}",
                    "message": f"expected {spec.type}, got {type(value).__name__}",
                }
            )
    if problems:
        raise InvalidArgument("inputs do not match the workflow's inputs", details=problems)
    return resolved


def validate_human_input(schema: Any, data: Any) -> list[dict[str, str]]:
    """Problems of data against a human_input node's JSON Schema ([] when it fits)."""
    if not schema:
        return []
    try:
        validator = Draft202012Validator(schema)
    except SchemaError as error:
        return [{"field": "schema", "message": f"the node's schema is invalid: {error.message}"}]
    return [
        {
            "field": "data" + "".join(f"[{p!r}]" for p in error.absolute_path),
            "message": error.message,
        }
        for error in validator.iter_errors(data)
    ]
