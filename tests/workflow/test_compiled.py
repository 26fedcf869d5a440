"""compile_workflow: what a version compiles to, from its JSON or from its save's validation."""

from __future__ import annotations

from typing import Any

from libs.common import jsonutil
from libs.common.definition import ON_FAILURE_NODE_ID
from libs.common.secrets import referenced_secrets
from services.workflow.compiled import compile_workflow
from services.workflow.validation import validate_definition
from tests.workflow.catalog import core_catalog

CATALOG = core_catalog()

RAW: dict[str, Any] = {
    "name": "secrets-here-and-there",
    "settings": {"retry": {"max_attempts": 3}},
    "nodes": [
        {"id": "plain", "type": "template", "params": {"template": "no secret"}},
        {"id": "named", "type": "template", "params": {"template": "{{ secrets.API_KEY }}"}},
        {"id": "indexed", "type": "template", "params": {"template": "{{ secrets['B'] }}"}},
        {"id": "computed", "type": "template", "params": {"template": "{{ secrets[inputs.k] }}"}},
        # the word in a key, in a string that reads no secret, in `when` only
        {"id": "keyed", "type": "output", "params": {"value": {"secrets": 1}}},
        {"id": "worded", "type": "template", "params": {"template": "my secrets"}},
        {"id": "gated", "type": "noop", "when": "secrets.FLAG == 'on'"},
        {"id": "nested", "type": "output", "params": {"value": [{"b": "{{ secrets.DEEP }}"}]}},
        {"id": "escaped", "type": "template", "params": {"template": '\u00e9 "{{ secrets.Q }}"'}},
    ],
    "edges": [],
    "on_failure": {"type": "template", "params": {"template": "{{ secrets.ALERT }}"}},
}


def test_params_and_secrets_are_those_of_every_node() -> None:
    compiled = compile_workflow("wf", 1, RAW, CATALOG)
    nodes = compiled.definition.nodes
    assert [n.id for n in nodes][-1] == ON_FAILURE_NODE_ID
    assert compiled.params_json == {n.id: jsonutil.dumps(n.params) or b"{}" for n in nodes}
    walked = {n.id: referenced_secrets([n.params, n.when]) for n in nodes}
    assert compiled.secrets == walked
    assert walked["plain"] is None and walked["named"] == {"API_KEY"}
    assert walked["gated"] == {"FLAG"} and walked[ON_FAILURE_NODE_ID] == {"ALERT"}
    assert walked["nested"] == {"DEEP"} and walked["computed"] == set()
    assert all(n.retry is not None and n.retry.max_attempts == 3 for n in nodes)


def test_the_saved_definition_compiles_as_its_stored_json() -> None:
    report = validate_definition(RAW, CATALOG)
    assert report.definition is not None, report.errors
    stored = report.definition.model_dump(mode="json", exclude_none=True)
    from_json = compile_workflow("wf", 1, stored, CATALOG)
    from_save = compile_workflow("wf", 1, report.definition, CATALOG, report.graph)
    assert from_save.definition == from_json.definition
    assert from_save.params_json == from_json.params_json
    assert from_save.secrets == from_json.secrets
    assert from_save.plan.order == from_json.plan.order
    assert from_save.plan._in_edges == from_json.plan._in_edges
