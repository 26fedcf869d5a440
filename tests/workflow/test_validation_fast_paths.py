"""The shortcuts validation takes on large definitions decide as the per-node checks do."""

from __future__ import annotations

from typing import Any

import pytest

from services.workflow import validation
from services.workflow.definition import node_id_problem
from services.workflow.validation import (
    _compile_batch,
    _compile_fast,
    _ids_valid,
    validate_definition,
)
from tests.workflow.catalog import core_catalog


@pytest.mark.parametrize(
    "ids",
    [
        ["start", "n1", "_x", "a" * 64],
        ["start", "a" * 65],  # too long
        ["start", "a\nb"],  # a newline inside an id: two valid-looking lines
        ["start", "a\n"],
        ["ok", ""],
        ["ok", "1abc"],
        ["ok", "range"],  # reserved
        ["ok", "inputs"],
        ["ok", "dash-ed"],
        ["ok", "é"],
        [],
    ],
)
def test_the_one_pass_id_check_agrees_with_node_id_problem(ids: list[str]) -> None:
    assert _ids_valid(ids) == all(node_id_problem(i) is None for i in ids)


def _template_node(node_id: str, template: str) -> dict[str, Any]:
    return {"id": node_id, "type": "template", "params": {"template": template}}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # every name fine: the quick pass over the names settles it, nothing reported
        ("{{ a.text }} {{ b.text }} {{ inputs.topic }}", []),
        # bad names among good ones: all reported in name order (c, env, zz), as before
        (
            "{{ zz.text }} {{ a.text }} {{ env.HOME }} {{ c.text }}",
            ["reference_not_upstream", "unsupported_reference", "unknown_reference"],
        ),
        ("{{ t.text }} {{ a.text }}", ["self_reference"]),
        ("{{ broken.x }} {{ a.text }}", []),  # a node that failed to parse: not reported
    ],
)
def test_the_quick_reference_pass_reports_what_the_full_one_does(
    template: str, expected: list[str]
) -> None:
    raw: dict[str, Any] = {
        "name": "refs",
        "inputs": {"topic": {"type": "string"}},
        "nodes": [
            {"id": "start", "type": "input"},
            _template_node("a", "x"),
            _template_node("b", "y"),
            _template_node("c", "z"),  # not upstream of t
            _template_node("t", template),
            {"id": "broken", "type": "template", "params": {"template": "x"}, "retry": 3},
        ],
        "edges": [
            {"source": "start", "target": "a"},
            {"source": "a", "target": "b"},
            {"source": "b", "target": "t"},
            {"source": "start", "target": "c"},
        ],
    }
    if "broken" not in template:
        raw["nodes"].pop()
    report = validate_definition(raw, core_catalog())
    assert [issue.code for issue in report.errors if issue.node_id == "t"] == expected


_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {}, "additionalProperties": False},
    {
        "type": "object",
        "properties": {"template": {"type": "string", "description": "text"}},
        "required": ["template"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"expression": {"type": "string", "minLength": 1}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    {"type": "object", "properties": {"mode": {"type": "string", "enum": ["all", "any"]}}},
    {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "tags": {"type": "array"}},
        "required": ["n"],
    },
]
_PARAMS: list[Any] = [
    {},
    {"template": "hi"},
    {"template": "{{ a.b }}"},
    {"template": 3},
    {"template": None},
    {"expression": ""},
    {"expression": "a.b"},
    {"mode": "any"},
    {"mode": "some"},
    {"mode": 1},
    {"n": 1},
    {"n": True},
    {"n": "{{ inputs.n }}"},
    {"n": "three"},
    {"n": 2, "tags": []},
    {"n": 2, "tags": "x"},
    {"n": 2, "other": 1},
    {"other": 1},
]


@pytest.mark.parametrize("schema", _SCHEMAS)
def test_the_batch_params_check_accepts_only_what_each_check_accepts(
    schema: dict[str, Any],
) -> None:
    fast, batch = _compile_fast(schema), _compile_batch(schema)
    assert fast is not None and batch is not None
    accepted = [params for params in _PARAMS if fast(params)]
    assert batch(accepted) and batch([])
    for params in _PARAMS:  # one refused among accepted ones: the batch refuses
        assert batch([*accepted, params]) == fast(params), params


def _mixed(broken: dict[str, Any] | None = None) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "input"}]
    for i in range(30):
        kind = ("template", "condition", "merge", "noop", "transform")[i % 5]
        params = {
            "template": {"template": f"{{{{ start.topic }}}} {i}"},
            "condition": {"expression": "start.topic"},
            "merge": {"mode": ("all", "any")[i % 2]},
            "noop": {},
            "transform": {"expression": "start.topic"},
        }[kind]
        nodes.append({"id": f"n{i}", "type": kind, "params": params})
    if broken is not None:
        nodes[int(broken.pop("at"))].update(broken)
    return {
        "name": "mixed",
        "nodes": nodes,
        "edges": [{"source": "start", "target": n["id"]} for n in nodes[1:]],
    }


@pytest.mark.parametrize(
    "broken",
    [
        None,
        {"at": 3, "params": {"template": 7}},
        {"at": 4, "params": {"expression": "  "}},
        {"at": 5, "params": {"mode": "some", "x": 1}},
        {"at": 6, "params": {"nope": 1}},
        {"at": 7, "params": {}},
        {"at": 9, "params": {"template": "{{ start.topic }}", "extra": True}},
        {"at": 2, "type": "input"},
        {"at": 8, "id": "n2"},  # a duplicate: the node-by-node path
        {"at": 8, "type": "teleport"},
    ],
)
def test_the_whole_list_node_checks_report_what_the_node_by_node_ones_do(
    broken: dict[str, Any] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _mixed(dict(broken) if broken else None)
    catalog = core_catalog()
    quick = validate_definition(raw, catalog)
    # the same definition through the node-by-node rules only (and per-node params checks)
    monkeypatch.setattr(validation, "_ids_valid", lambda ids: False)
    monkeypatch.setattr(validation, "_compile_batch", lambda schema: None)
    validation._CHECKERS.clear()
    slow = validate_definition(raw, catalog)
    validation._CHECKERS.clear()
    assert quick.errors == slow.errors
    assert quick.warnings == slow.warnings
    assert quick.valid == (broken is None)
