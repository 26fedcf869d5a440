from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from services.workflow.validation import (
    ValidationReport,
    _compile_fast,
    validate_definition,
)
from tests.workflow.catalog import core_catalog

CATALOG = core_catalog()

EXAMPLE: dict[str, Any] = {
    "name": "summarize-feed",
    "inputs": {"url": {"type": "string", "required": True}},
    "nodes": [
        {"id": "start", "type": "input"},
        {
            "id": "fetch",
            "type": "http_request",
            "params": {"method": "GET", "url": "{{ inputs.url }}", "timeout_s": "{{ inputs.t }}"},
            "retry": {"max_attempts": 3, "backoff": "exponential"},
            "timeout_s": 20,
        },
        {
            "id": "summarize",
            "type": "template",
            "params": {"template": "Summarize: {{ fetch.body }}"},
            "on_error": "continue",
            "cache": {"ttl_s": 3600},
            "position": {"x": 10, "y": 20},
        },
        {
            "id": "check",
            "type": "condition",
            "params": {"expression": "summarize.text | length > 0"},
        },
        {"id": "done", "type": "output", "params": {"value": {"summary": "{{ summarize.text }}"}}},
    ],
    "edges": [
        {"source": "start", "target": "fetch"},
        {"source": "fetch", "target": "summarize"},
        {"source": "summarize", "target": "check"},
        {"source": "check", "source_port": "true", "target": "done"},
    ],
    "outputs": {"summary": "{{ done.summary }}"},
}


def validate(raw: Any) -> ValidationReport:
    return validate_definition(raw, CATALOG)


def edited(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(EXAMPLE)
    raw.update(changes)
    return raw


def codes(report: ValidationReport) -> list[str]:
    return [issue.code for issue in report.errors]


def test_the_architecture_example_is_valid() -> None:
    raw = edited()
    raw["inputs"]["t"] = {"type": "number"}
    report = validate(raw)
    assert report.errors == []
    assert report.valid
    assert report.definition is not None
    assert report.definition.nodes[2].position == {"x": 10, "y": 20}


def test_undeclared_input_is_an_error_when_inputs_are_declared() -> None:
    report = validate(edited())  # inputs.t is not declared
    assert codes(report) == ["undeclared_input"]
    assert report.errors[0].node_id == "fetch"
    assert report.errors[0].field == "nodes[1].params.timeout_s"


def test_undeclared_input_is_a_warning_without_declared_inputs() -> None:
    raw = edited(inputs={})
    report = validate(raw)
    assert report.valid
    assert {w.code for w in report.warnings} == {"undeclared_input"}


def test_every_problem_is_listed_and_located() -> None:
    raw = edited()
    raw["inputs"]["t"] = {"type": "number"}
    raw["nodes"].append({"id": "fetch", "type": "noop"})  # duplicate
    raw["nodes"].append({"id": "odd", "type": "teleport"})  # unknown type
    raw["nodes"].append({"id": "late", "type": "template", "params": {"template": "{{ done.x }}"}})
    raw["edges"].append({"source": "ghost", "target": "done"})  # dangling
    raw["edges"].append({"source": "check", "source_port": "maybe", "target": "late"})
    raw["edges"].append({"source": "fetch", "source_port": "error", "target": "late"})
    raw["nodes"][1]["params"]["method"] = "BREW"  # schema
    raw["nodes"][2]["params"]["template"] = "{{ fetch.body "  # syntax
    raw["nodes"][3]["when"] = "{{ later.x }}"  # unknown reference
    report = validate(raw)
    found = {(i.code, i.node_id, i.edge, i.field) for i in report.errors}
    assert ("duplicate_node_id", "fetch", None, "nodes[5].id") in found
    assert ("unknown_node_type", "odd", None, "nodes[6].type") in found
    assert ("dangling_edge", None, 4, "edges[4].source") in found
    assert ("unknown_port", "check", 5, "edges[5].source_port") in found
    assert ("unknown_port", "fetch", 6, "edges[6].source_port") in found
    assert ("invalid_params", "fetch", None, "nodes[1].params.method") in found
    assert ("invalid_expression", "summarize", None, "nodes[2].params.template") in found
    assert ("unknown_reference", "check", None, "nodes[3].when") in found
    assert not report.valid and report.definition is None
    syntax = next(i for i in report.errors if i.code == "invalid_expression")
    assert "{{ fetch.body " in syntax.message


def test_reference_to_a_node_that_is_not_upstream() -> None:
    raw = edited()
    raw["inputs"]["t"] = {"type": "number"}
    raw["nodes"][2]["params"]["template"] = "{{ done.summary }}"
    report = validate(raw)
    assert codes(report) == ["reference_not_upstream"]
    assert report.errors[0].node_id == "summarize"
    assert "'done'" in report.errors[0].message


def test_reference_to_an_indirect_ancestor_is_fine() -> None:
    raw = edited()
    raw["inputs"]["t"] = {"type": "number"}
    raw["nodes"][4]["params"]["value"] = "{{ fetch.status }} {{ start }}"
    assert validate(raw).valid


def test_self_reference() -> None:
    raw = edited()
    raw["inputs"]["t"] = {"type": "number"}
    raw["nodes"][2]["params"]["template"] = "{{ summarize.text }}"
    assert codes(validate(raw)) == ["self_reference"]


def test_outputs_must_reference_existing_nodes() -> None:
    raw = edited(outputs={"x": "{{ nowhere.y }}", "ok": "{{ done }}"})
    raw["inputs"]["t"] = {"type": "number"}
    report = validate(raw)
    assert codes(report) == ["unknown_reference"]
    assert report.errors[0].field == "outputs.x"


def test_cycles_are_reported_with_their_path() -> None:
    raw = {
        "name": "loop",
        "nodes": [{"id": n, "type": "noop"} for n in ["a", "b", "c", "d", "e", "f"]],
        "edges": [
            {"source": "a", "target": "b"},
            {"source": "b", "target": "c"},
            {"source": "c", "target": "a"},
            {"source": "c", "target": "d"},
            {"source": "e", "target": "e"},
        ],
    }
    report = validate(raw)
    messages = sorted(i.message for i in report.errors if i.code == "cycle")
    assert messages == ["cycle: a -> b -> c -> a", "cycle: e -> e"]


def test_model_errors_are_located() -> None:
    raw = edited()
    raw["nodes"][1]["retry"] = {"max_attempts": 0}
    raw["nodes"][2]["on_eror"] = "continue"
    raw["edges"][0]["target"] = 5
    raw["bogus"] = 1
    report = validate(raw)
    found = {(i.field, i.node_id, i.edge) for i in report.errors if i.code == "invalid_field"}
    assert ("nodes[1].retry.max_attempts", "fetch", None) in found
    assert ("nodes[2].on_eror", "summarize", None) in found
    assert ("edges[0].target", None, 0) in found
    assert ("bogus", None, None) in found


def test_graph_rules_still_run_when_some_nodes_do_not_parse() -> None:
    raw = {
        "name": "partial",
        "nodes": [
            {"id": "a", "type": "noop", "timeout_s": -1},
            {"id": "b", "type": "noop"},
            {"id": "c", "type": "noop"},
        ],
        "edges": [
            {"source": "a", "target": "b"},
            {"source": "b", "target": "c"},
            {"source": "c", "target": "b"},
        ],
    }
    report = validate(raw)
    assert sorted(codes(report)) == ["cycle", "invalid_field"]  # no dangling edge for 'a'


def test_node_id_rules() -> None:
    raw = {
        "name": "ids",
        "nodes": [
            {"id": "has-dash", "type": "noop"},
            {"id": "inputs", "type": "noop"},
            {"id": "9lives", "type": "noop"},
            {"id": "fine_1", "type": "noop"},
        ],
    }
    report = validate(raw)
    assert [(i.code, i.field) for i in report.errors] == [
        ("invalid_node_id", "nodes[0].id"),
        ("invalid_node_id", "nodes[1].id"),
        ("invalid_node_id", "nodes[2].id"),
    ]


def test_condition_needs_an_expression_and_one_input_node() -> None:
    raw = {
        "name": "x",
        "nodes": [
            {"id": "i1", "type": "input"},
            {"id": "i2", "type": "input"},
            {"id": "c", "type": "condition", "params": {"expression": " "}},
            {"id": "s", "type": "switch", "params": {"cases": [1, 2]}},
        ],
    }
    report = validate(raw)
    found = {(i.code, i.node_id) for i in report.errors}
    assert ("multiple_input_nodes", "i2") in found
    assert ("missing_expression", "c") in found
    assert ("missing_expression", "s") in found


def test_switch_ports_follow_cases_and_error_port_needs_fail_branch() -> None:
    raw = {
        "name": "x",
        "nodes": [
            {"id": "s", "type": "switch", "params": {"expression": "1", "cases": ["a", 2]}},
            {"id": "t", "type": "noop"},
            {"id": "u", "type": "noop", "on_error": "fail_branch"},
        ],
        "edges": [
            {"source": "s", "source_port": "a", "target": "t"},
            {"source": "s", "source_port": "2", "target": "t"},
            {"source": "s", "source_port": "default", "target": "u"},
            {"source": "s", "source_port": "b", "target": "u"},
        ],
    }
    report = validate(raw)
    assert [(i.code, i.edge) for i in report.errors] == [("unknown_port", 3)]
    assert {w.code for w in report.warnings} == {"unrouted_error_port"}


def test_target_ports_are_checked() -> None:
    raw = {
        "name": "x",
        "nodes": [{"id": "a", "type": "noop"}, {"id": "m", "type": "merge"}],
        "edges": [
            {"source": "a", "target": "m", "target_port": "in"},
            {"source": "a", "target": "m", "target_port": "side"},
        ],
    }
    report = validate(raw)
    assert [(i.code, i.field) for i in report.errors] == [("unknown_port", "edges[1].target_port")]


def test_templated_strings_stand_for_any_type() -> None:
    raw: dict[str, Any] = {
        "name": "x",
        "inputs": {"d": {}, "h": {}},
        "nodes": [
            {"id": "d", "type": "delay", "params": {"seconds": "{{ inputs.d }}"}},
            {
                "id": "h",
                "type": "http_request",
                "params": {
                    "url": "http://x",
                    "headers": "{{ inputs.h }}",
                    "method": "{{ inputs.d }}",
                },
            },
        ],
    }
    assert validate(raw).valid
    raw["nodes"][0]["params"]["seconds"] = "soon"
    report = validate(raw)
    assert [(i.code, i.field) for i in report.errors] == [
        ("invalid_params", "nodes[0].params.seconds")
    ]


def test_limits() -> None:
    raw = {"name": "big", "nodes": [{"id": f"n{i}", "type": "noop"} for i in range(11)]}
    report = validate_definition(raw, CATALOG, max_nodes=10)
    assert codes(report) == ["too_many_nodes"]
    assert codes(validate("not a dict")) == ["invalid_definition"]
    assert codes(validate({"name": "empty", "nodes": []})) == ["empty_workflow"]


def test_an_already_parsed_definition_is_accepted() -> None:
    raw = edited()
    raw["inputs"]["t"] = {"type": "number"}
    definition = validate(raw).definition
    assert definition is not None
    assert validate(definition).valid


# ---- the fast schema pre-check never accepts what jsonschema rejects -------------------

SCHEMAS: list[dict[str, Any]] = [spec.params_schema for spec in CATALOG.values()] + [
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 5}}},
    {"type": "object", "properties": {"e": {"enum": [1, "a", None, True]}}, "required": ["e"]},
    {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a", "maxLength": 3}}},
    {
        "type": "object",
        "properties": {"l": {"type": "array", "items": {"type": "number"}, "minItems": 1}},
    },
    {"type": "object", "additionalProperties": {"type": "boolean"}},
    {"type": "object", "properties": {"u": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}},
    {"type": "object", "properties": {"c": {"const": 1}}},
]
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 8)
    | st.floats(allow_nan=False, allow_infinity=False, width=16)
    | st.sampled_from(["a", "abc", "abcd", "b", "{{ x }}", "GET", "all", "any", ""]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["n", "e", "s", "l", "u", "c", "url", "method", "mode", "seconds", "template", "x"]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)


@settings(deadline=None, max_examples=300)
@given(
    schema=st.sampled_from(SCHEMAS),
    params=st.dictionaries(
        st.sampled_from(
            [
                "n",
                "e",
                "s",
                "l",
                "u",
                "c",
                "url",
                "method",
                "mode",
                "seconds",
                "template",
                "expression",
                "value",
                "cases",
                "headers",
                "json",
                "x",
            ]
        ),
        VALUES,
        max_size=4,
    ),
)
def test_fast_schema_check_is_sound(schema: dict[str, Any], params: dict[str, Any]) -> None:
    fast = _compile_fast(schema)
    assert fast is not None
    if fast(params):
        errors = [
            e
            for e in Draft202012Validator(schema).iter_errors(params)
            if not (isinstance(e.instance, str) and "{{" in e.instance)
        ]
        assert errors == [], (schema, params)
