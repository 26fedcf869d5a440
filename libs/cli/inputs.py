"""`key=value` pairs typed by what a workflow (or a human_input schema) declares.

A declared string stays a string (`name=123` is "123"); integer, number, boolean, object and
array values are parsed, and a value that does not parse is refused naming the input. An
undeclared key (or one without a type) is JSON when it parses, else a string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from libs.cli.api import CliError

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}
_ARTICLE = {"integer": "an integer", "array": "an array", "object": "an object"}


def declared_types(inputs: Any) -> dict[str, str]:
    """{name: JSON type} of a definition's `inputs` mapping (or a JSON Schema's properties)."""
    if not isinstance(inputs, dict):
        return {}
    types = {}
    for name, spec in inputs.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if isinstance(kind, str):
            types[str(name)] = kind
    return types


def convert(key: str, raw: str, kind: str | None, option: str = "--input") -> Any:
    """raw as the declared JSON type kind (None: JSON if it parses, else the string)."""
    if kind == "string":
        return raw
    if kind == "boolean":
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _wrong(option, key, kind, raw)
    if kind == "integer":
        try:
            return int(raw.strip())
        except ValueError:
            raise _wrong(option, key, kind, raw) from None
    try:
        value = json.loads(raw)
    except ValueError:
        if kind in {"number", "object", "array"}:
            raise _wrong(option, key, kind, raw) from None
        return raw
    expected: dict[str, tuple[type, ...]] = {
        "number": (int, float),
        "object": (dict,),
        "array": (list,),
    }
    if kind in expected and (not isinstance(value, expected[kind]) or isinstance(value, bool)):
        raise _wrong(option, key, kind, raw)
    return value


def _wrong(option: str, key: str, kind: str, raw: str) -> CliError:
    return CliError(f"{option} {key}: expected {_ARTICLE.get(kind, 'a ' + kind)}, got {raw!r}")


def parse_pairs(pairs: list[str], types: dict[str, str], option: str = "--input") -> dict[str, Any]:
    """Each `key=value` converted by the type declared for key."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"{option} {pair!r}: expected key=value")
        values[key] = convert(key, raw, types.get(key), option)
    return values


def read_mapping(path: str) -> dict[str, Any]:
    """A JSON or YAML mapping from a file (values keep the types written there)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CliError(f"cannot read inputs from {path}: {error}") from None
    if not isinstance(loaded, dict):
        raise CliError(f"{path}: inputs must be a mapping")
    return loaded


def parse_inputs(pairs: list[str], input_file: str | None, declared: Any = None) -> dict[str, Any]:
    """--input-file overlaid by each --input k=v, typed by the workflow's declared inputs."""
    inputs = read_mapping(input_file) if input_file else {}
    inputs.update(parse_pairs(pairs, declared_types(declared)))
    return inputs
