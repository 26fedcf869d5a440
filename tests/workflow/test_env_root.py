"""The `env` template root is refused at validation (issue #20): the deployment's environment
is not exposed to workflows, and a reference to it used to validate and render empty."""

from __future__ import annotations

from typing import Any

from services.workflow.validation import validate_definition
from tests.workflow.catalog import core_catalog

CATALOG = core_catalog()


def _flow(**extra: Any) -> dict[str, Any]:
    return {
        "name": "env",
        "nodes": [
            {"id": "t", "type": "template", "params": {"template": "{{ env.HOME }}!"}},
            {"id": "ok", "type": "template", "params": {"template": "{{ inputs.x }}"}},
        ],
        **extra,
    }


def test_a_node_referencing_env_is_refused_with_its_location() -> None:
    report = validate_definition(_flow(), CATALOG)
    refused = [i for i in report.errors if i.code == "unsupported_reference"]
    assert len(refused) == 1
    assert refused[0].node_id == "t" and refused[0].field == "nodes[0].params.template"
    assert "secrets" in refused[0].message and "inputs" in refused[0].message
    assert not report.valid


def test_outputs_referencing_env_are_refused() -> None:
    flow = _flow(outputs={"home": "{{ env.HOME }}"})
    flow["nodes"] = flow["nodes"][1:]
    report = validate_definition(flow, CATALOG)
    assert [(i.code, i.field) for i in report.errors] == [("unsupported_reference", "outputs.home")]


def test_env_stays_reserved_as_a_node_id() -> None:
    flow = {"name": "x", "nodes": [{"id": "env", "type": "noop"}]}
    assert not validate_definition(flow, CATALOG).valid
