from __future__ import annotations

import jsonschema
import pytest

from services.node.executors.core import NoopExecutor
from services.node.registry import NodeTypeRegistry, UnknownNodeTypeError, default_registry

CONTRACT_TYPES = {
    "input", "output", "noop", "template", "transform", "condition", "switch", "merge",
    "delay", "http_request", "code", "llm", "agent", "tool", "map", "subworkflow",
    "human_input",
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
