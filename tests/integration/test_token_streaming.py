"""An llm node's tokens reach event-stream clients as they come (node.text_chunk events),
before the node completes."""

from __future__ import annotations

import httpx

from tests.integration.helpers import create_workflow, events, node, run, wait_final

TALK = {
    "name": "talk",
    "nodes": [
        {
            "id": "say",
            "type": "llm",
            "params": {"model": "echo", "prompt": "looms weave many threads into cloth"},
        },
        {"id": "after", "type": "noop"},
    ],
    "edges": [{"source": "say", "target": "after"}],
}


async def test_llm_tokens_stream_as_text_chunk_events(client: httpx.AsyncClient) -> None:
    execution_id = await run(client, await create_workflow(client, TALK))
    execution = await wait_final(client, execution_id)
    assert execution["status"] == "succeeded", execution["error"]
    text = node(execution, "say")["output"]["text"]
    assert text == "echo: looms weave many threads into cloth"

    history = await events(client, execution_id)
    chunks = [e for e in history if e["type"] == "node.text_chunk"]
    assert chunks, [e["type"] for e in history]
    assert all(e["node_id"] == "say" and e["data"]["attempt"] == 1 for e in chunks)
    # Every token arrived, in order, and all of them before the node completed.
    assert "".join(e["data"]["delta"] for e in chunks) == text
    completed = next(
        e["seq"] for e in history if e["type"] == "node.completed" and e["node_id"] == "say"
    )
    assert max(e["seq"] for e in chunks) < completed
    started = next(
        e["seq"] for e in history if e["type"] == "node.started" and e["node_id"] == "say"
    )
    assert min(e["seq"] for e in chunks) > started
