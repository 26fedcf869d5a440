"""A map's inline node written with an id, as any node is (issue #16 item 10): it runs."""

from __future__ import annotations

from tests.node.conftest import RunNode


async def test_a_map_runs_an_inline_node_that_carries_an_id(run_node: RunNode) -> None:
    result = await run_node(
        "map",
        {
            "items": [2, 3],
            "node": {"id": "square", "type": "transform", "params": {"expression": "item * item"}},
        },
    )
    assert result.output == {"results": [{"value": 4}, {"value": 9}]}
