from __future__ import annotations

import jsonschema
import pytest

from services.node.executors.base import _VALID_PARAMS, NodeError, validate_params
from services.node.executors.core import NoopExecutor
from services.node.registry import NodeTypeRegistry, UnknownNodeTypeError, default_registry

CONTRACT_TYPES = {
    "input", "output", "noop", "template", "transform", "condition", "switch", "merge",
    "delay", "http_request", "code", "llm", "agent", "tool", "map", "subworkflow",
    "human_input", "sql", "wait_event", "loop", "retrieve",
}  # fmt: skip


def test_default_registry_has_every_contract_type_with_valid_schemas() -> None:
    specs = default_registry().specs()
    assert {spec.type for spec in specs} == CONTRACT_TYPES
    for spec in specs:
        jsonschema.Draft202012Validator.check_schema(spec.params_schema)
        jsonschema.Draft202012Validator.check_schema(spec.output_schema)
        assert spec.title and spec.description, spec.type
        # Specs cross gRPC as JSON.
        assert type(spec).model_validate_json(spec.model_dump_json()) == spec


def test_register_rejects_duplicates_and_get_rejects_unknown_types() -> None:
    registry = NodeTypeRegistry()
    registry.register(NoopExecutor())
    assert "noop" in registry
    with pytest.raises(ValueError, match="already registered"):
        registry.register(NoopExecutor())
    with pytest.raises(UnknownNodeTypeError, match="nope"):
        registry.get("nope")


def test_switch_ports_follow_its_cases() -> None:
    spec = default_registry().get("switch").spec
    assert spec.ports_for({"cases": ["a", 2]}) == ["a", "2", "default", "out"]


def test_params_found_valid_are_remembered_and_invalid_ones_never_are() -> None:
    spec = default_registry().get("delay").spec
    good = {"seconds": 0.25}
    validate_params(spec, good)
    assert (id(spec), b'{"seconds":0.25}') in _VALID_PARAMS
    validate_params(spec, dict(good))  # served from what was remembered
    for bad in ({"seconds": "soon"}, {"seconds": -1}, {"seconds": 0.25, "unknown": 1}):
        with pytest.raises(NodeError) as refused:
            validate_params(spec, bad)
        assert refused.value.type == "ValidationError"
        with pytest.raises(NodeError):
            validate_params(spec, bad)  # still refused the second time
    # Values that are not plain JSON are validated every time, never remembered.
    before = len(_VALID_PARAMS)
    with pytest.raises(NodeError):
        validate_params(spec, {"seconds": {1, 2}})
    assert len(_VALID_PARAMS) == before
