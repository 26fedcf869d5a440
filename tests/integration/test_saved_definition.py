"""The first run of a version saved through this replica takes the definition its save
validated (and the graph validation built): the stored JSON is not parsed a second time
(issue #17: 0.45 s for 100,000 nodes, paid by the user at the first run)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from libs.common.definition import WorkflowDefinition
from services.workflow import engine as engine_module
from tests.integration.helpers import create_workflow, run, wait_final

FLOW: dict[str, Any] = {
    "name": "saved-once",
    "inputs": {"who": {"type": "string", "required": True}},
    # a default retry: the compile copies the nodes that set none (the graph still applies)
    "settings": {"retry": {"max_attempts": 2, "initial_delay_s": 0}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "hi {{ inputs.who }}"}},
        {"id": "done", "type": "output", "params": {"value": "{{ greet.text }}"}},
    ],
    "edges": [{"source": "start", "target": "greet"}, {"source": "greet", "target": "done"}],
    "outputs": {"said": "{{ done }}"},
}


async def test_first_run_takes_the_saved_definition(
    stack: Stack, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = stack.services["workflow"].engine
    workflow_id = await create_workflow(client, FLOW)
    definition, graph = engine._saved[(workflow_id, 1)]
    assert graph is not None and graph.describes(definition)
    assert engine.held()["saved"] == 1

    parsed: list[Any] = []
    real = WorkflowDefinition.model_validate.__func__  # type: ignore[attr-defined]

    def counting(cls: type[WorkflowDefinition], obj: Any, **kwargs: Any) -> WorkflowDefinition:
        parsed.append(obj)
        return real(cls, obj, **kwargs)

    monkeypatch.setattr(WorkflowDefinition, "model_validate", classmethod(counting))
    execution = await wait_final(client, await run(client, workflow_id, {"who": "ada"}))
    assert execution["status"] == "succeeded", execution
    assert execution["outputs"] == {"said": "hi ada"}
    assert parsed == []  # the stored JSON was not parsed again
    assert engine.held()["saved"] == 0  # taken by the compile
    compiled = await engine.compiled(workflow_id, 1, {})
    assert all(node.retry is not None for node in compiled.definition.nodes)

    # A version this replica did not save (another replica did): parsed from the store.
    engine._saved.clear()
    response = await client.put(f"/api/v1/workflows/{workflow_id}", json=FLOW)
    assert response.status_code == 200, response.text
    engine._saved.clear()
    parsed.clear()  # the save's own validation
    execution = await wait_final(client, await run(client, workflow_id, {"who": "bob"}))
    assert execution["outputs"] == {"said": "hi bob"}
    assert len(parsed) == 1 and parsed[0]["name"] == "saved-once"

    # Bounded: the newest saved version of a workflow only, at most 8, and by their nodes.
    saved = WorkflowDefinition.model_validate(FLOW)
    engine.remember_saved("w", 1, saved, None)
    engine.remember_saved("w", 2, saved, None)
    assert list(engine._saved) == [("w", 2)]
    for n in range(10):
        engine.remember_saved(f"x{n}", 1, saved, None)
    assert list(engine._saved) == [(f"x{n}", 1) for n in range(2, 10)]
    monkeypatch.setattr(engine_module, "_SAVED_NODES", 2 * len(saved.nodes))
    engine.remember_saved("y", 1, saved, None)
    assert list(engine._saved) == [("x9", 1), ("y", 1)]
    engine._saved.clear()
