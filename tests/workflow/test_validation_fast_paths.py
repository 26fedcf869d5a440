"""The shortcuts validation takes on large definitions decide as the per-node checks do."""

from __future__ import annotations

import pytest

from services.workflow.definition import node_id_problem
from services.workflow.validation import _ids_valid


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
