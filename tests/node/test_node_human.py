from __future__ import annotations

import pytest

from services.node.executors.base import NodeError
from services.node.executors.human import validate_human_input
from tests.node.conftest import RunNode

SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "note": {"type": "string", "maxLength": 5}},
    "required": ["approved"],
}


async def test_human_input_waits_with_prompt_and_schema(run_node: RunNode) -> None:
    result = await run_node(
        "human_input",
        {"prompt": "Approve {{ inputs.doc }}?", "schema": SCHEMA, "timeout_s": 60},
        context={"inputs": {"doc": "report"}},
    )
    assert result.waiting == {"prompt": "Approve report?", "schema": SCHEMA, "timeout_s": 60}
    assert result.output is None


async def test_human_input_rejects_an_invalid_schema(run_node: RunNode) -> None:
    with pytest.raises(NodeError, match="not a valid JSON Schema"):
        await run_node("human_input", {"prompt": "?", "schema": {"type": "nonsense"}})


def test_validate_human_input_lists_located_problems() -> None:
    assert validate_human_input(SCHEMA, {"approved": True, "note": "ok"}) == []
    assert validate_human_input(SCHEMA, {"note": "too long"}) == [
        "/: 'approved' is a required property",
        "/note: 'too long' is too long",
    ]
    assert validate_human_input({"type": "bogus"}, {})[0].startswith("schema")
