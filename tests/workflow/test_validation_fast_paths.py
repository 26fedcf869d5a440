"""The shortcuts validation takes on large definitions decide as the per-node checks do."""

from __future__ import annotations

from typing import Any

import pytest

from libs.common.definition import WorkflowDefinition, node_id_problem
from services.node.registry import default_registry
from services.workflow import validation
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


#: (template of node t, whether it is fine): every way a reference can be right or wrong.
_REFERENCES: list[tuple[str, bool]] = [
    ("{{ a.text }} for {{ inputs.topic }}", True),
    ("{{ a.text }}{{ a.text }} {{ a }}", True),
    ("{{ g.text }}", True),  # a grandparent: the ancestors tell
    ("{{ f.fallback }}", True),  # default_output's field
    ("{{ e.error.message }}", True),  # the error port's output
    ("{{ a.text.deep }} {{ a.text | upper }}", True),
    ("{ not a template }", True),
    ("{{ zz.text }}", False),
    ("{{ c.text }}", False),  # not upstream
    ("{{ t.text }}", False),
    ("{{ env.HOME }}", False),
    ("{{ inputs.nope }}", False),
    ("{{ a.nope }}", False),
    ("{{ f.nope }}", False),
    ("{{ a.text ", False),
    ("{{ a._x }}", False),
    ("{{ range.x }}", True),  # a global, not a node
    ("{{ a.text }}\r\n{{ zz.y }}", False),
]


def _references(template: str) -> dict[str, Any]:
    """input -> g -> a -> t, with f (on_error continue) and e (fail_branch) into t, and c
    beside; t's template, when, default_output and a transform and an output after it all
    read what the case says."""
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "input"},
        _template_node("g", "{{ inputs.topic }}"),
        _template_node("a", "{{ g.text }}"),
        _template_node("c", "x"),
        {**_template_node("f", "y"), "on_error": "continue", "default_output": {"fallback": 1}},
        {**_template_node("e", "z"), "on_error": "fail_branch"},
        {
            **_template_node("t", template),
            "when": template if "{{" in template else "a.text == 'x'",
            "on_error": "continue",
            "default_output": {"v": [template, 3, None]},
        },
        {"id": "x", "type": "transform", "params": {"expression": "t.text * 2"}},
        {"id": "y", "type": "transform", "params": {"expression": "zz.q"}},
        {"id": "z", "type": "condition", "params": {"expression": "{{ x.value }}"}},
        {"id": "o", "type": "output", "params": {"value": {"k": template, "n": 1}}},
        {"id": "d", "type": "delay", "params": {"seconds": 1}},
    ]
    edges = [("start", "g"), ("g", "a"), ("a", "t"), ("f", "t"), ("start", "c")]
    edges += [("t", "x"), ("start", "y"), ("x", "z"), ("t", "o"), ("o", "d"), ("start", "f")]
    raw_edges: list[dict[str, Any]] = [{"source": s, "target": t} for s, t in edges]
    raw_edges.append({"source": "e", "source_port": "error", "target": "t"})
    raw_edges.append({"source": "start", "target": "e"})
    return {
        "name": "references",
        "inputs": {"topic": {"type": "string"}},
        "nodes": nodes,
        "edges": raw_edges,
    }


@pytest.mark.parametrize(("template", "fine"), _REFERENCES)
def test_the_whole_list_reference_pass_reports_what_the_node_by_node_one_does(
    template: str, fine: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _references(template)
    catalog = {spec.type: spec for spec in default_registry().specs()}
    monkeypatch.setattr(validation, "_BULK_REFERENCES", 0)
    quick = validate_definition(raw, catalog)
    monkeypatch.setattr(validation, "_BULK_REFERENCES", 10**9)
    slow = validate_definition(raw, catalog)
    assert quick.errors == slow.errors
    assert quick.warnings == slow.warnings
    # y's zz.q is wrong in every case (the pass must find it among fine nodes); t's own
    # references are wrong only where the case says so
    assert "y" in {e.node_id for e in quick.errors}
    assert ("t" in {e.node_id for e in quick.errors}) == (not fine)


def test_the_whole_list_reference_pass_settles_the_bench_definition_itself() -> None:
    # not a shortcut that never fires: on a valid layered DAG it leaves no node to look at
    raw = _layered(1_000)
    catalog = {spec.type: spec for spec in default_registry().specs()}
    checker = _checked(raw, catalog)
    assert checker._references_worth_a_look() == []
    assert validate_definition(raw, catalog).valid
    raw["nodes"][500]["params"] = {"template": "{{ n999.text }}"}  # downstream of n500
    assert _checked(raw, catalog)._references_worth_a_look() == [500]


def _layered(count: int) -> dict[str, Any]:
    """A DAG of 10-wide layers as bench/plan_10k.py builds them: templates that read a
    parent and the inputs, transforms, conditions and their ports, merges."""
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "input"}]
    edges: list[dict[str, Any]] = []
    previous = [("start", "input")]
    while len(nodes) < count:
        layer = []
        for j in range(10):
            node_id, (parent, kind) = f"n{len(nodes)}", previous[j % len(previous)]
            field = {"input": "topic", "template": "text", "transform": "value"}.get(kind)
            edge: dict[str, Any] = {"source": parent, "target": node_id}
            if kind == "condition":
                edge["source_port"] = "true"
                params: dict[str, Any] = {"mode": "any"}
                node_type = "merge"
            elif j % 3 == 0 and field:
                node_type, params = (
                    "template",
                    {"template": f"{{{{ {parent}.{field} }}}} {{{{ inputs.topic }}}}"},
                )
            elif j % 3 == 1 and field:
                node_type, params = "transform", {"expression": f"{parent}.{field} * 2"}
            elif field:
                node_type = "condition"
                params = {"expression": f"{{{{ {parent}.{field} | default(0) > 3 }}}}"}
            else:
                node_type, params = "noop", {}
            nodes.append({"id": node_id, "type": node_type, "params": params})
            edges.append(edge)
            layer.append((node_id, node_type))
        previous = layer
    return {
        "name": "layered",
        "inputs": {"topic": {"type": "string"}},
        "nodes": nodes,
        "edges": edges,
    }


def _checked(raw: dict[str, Any], catalog: dict[str, Any]) -> Any:
    definition = WorkflowDefinition.model_validate(raw)
    checker = validation._Checker(
        validation._Issues(),
        catalog,
        list(enumerate(definition.nodes)),
        list(range(len(definition.edges))),
        list(definition.edges),
        definition.inputs,
        definition.outputs,
        set(),
    )
    checker.specs = checker._check_nodes()
    checker._check_edges(checker.specs)
    return checker


def test_a_repeated_edge_is_a_warning_and_the_same_ends_on_other_ports_are_not() -> None:
    raw = _mixed()
    edges = raw["edges"]
    edges.append({"source": "start", "target": "n1"})  # repeats edges[1]
    edges.append({"source": "n1", "target": "n2", "target_port": "in"})  # n2: a merge
    edges.append({"source": "n1", "target": "n2"})  # same ends, another port: no repeat
    report = validate_definition(raw, core_catalog())
    assert report.errors == []
    assert [(w.code, w.edge, w.message) for w in report.warnings] == [
        ("duplicate_edge", 30, "edges[30] repeats edges[1]")
    ]
    edges.pop()  # only different ports between n1 and n2 now: nothing repeats at all
    edges.pop(30)
    assert [w.code for w in validate_definition(raw, core_catalog()).warnings] == []


def test_edges_that_do_not_parse_are_located_as_when_they_were_models() -> None:
    # edges are checked dicts now (EdgeSpec, a TypedDict): the errors read as before
    raw = {
        "name": "w",
        "nodes": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop"}],
        "edges": [
            3,
            {"source": 1, "target": "b"},
            {"source": "", "target": "b"},
            {"target": "b"},
            {"source": "a", "target": "b", "zz": 1},
            {"source": "a", "target": "b", "ui": []},
            {"source": "a", "target": "b", "source_port": "x"},
        ],
    }
    report = validate_definition(raw, core_catalog())
    assert [(e.code, e.edge, e.field, e.message) for e in report.errors] == [
        (
            "invalid_field",
            0,
            "edges[0]",
            "edges[0]: Input should be a valid dictionary or instance of EdgeSpec",
        ),
        ("invalid_field", 1, "edges[1].source", "edges[1].source: Input should be a valid string"),
        (
            "invalid_field",
            2,
            "edges[2].source",
            "edges[2].source: String should have at least 1 character",
        ),
        ("invalid_field", 3, "edges[3].source", "edges[3].source: Field required"),
        ("invalid_field", 4, "edges[4].zz", "edges[4].zz: unknown field 'zz'"),
        ("invalid_field", 5, "edges[5].ui", "edges[5].ui: Input should be a valid dictionary"),
        (
            "unknown_port",
            6,
            "edges[6].source_port",
            "edges[6]: 'a' (noop) has no output port 'x'; it has 'out'",
        ),
    ]


@pytest.mark.parametrize(
    ("text", "located"),
    [
        ("a\x00b", True),  # the only backslash in the encoding is the NUL's
        ('say "hi"\n\x00', True),  # others too
        ('say "hi"\n', False),  # backslashes, no NUL
        ("plain", False),  # no backslash at all
    ],
)
def test_the_nul_scan_finds_a_nul_with_or_without_other_escapes(text: str, located: bool) -> None:
    raw = {"name": "nul", "nodes": [{"id": "t", "type": "template", "params": {"template": text}}]}
    report = validate_definition(raw, core_catalog())
    nul = [(i.code, i.field) for i in report.errors if i.code == "nul_character"]
    assert nul == ([("nul_character", "nodes[0].params.template")] if located else [])
    assert report.valid is not located
