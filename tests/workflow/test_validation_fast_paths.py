"""The shortcuts validation takes on large definitions decide as the per-node checks do."""

from __future__ import annotations

from typing import Any

import pytest

from services.workflow.definition import node_id_problem
from services.workflow.validation import _ids_valid, validate_definition
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
