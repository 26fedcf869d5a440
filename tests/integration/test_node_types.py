"""Every node type through the HTTP API on the embedded stack, asserting its real outputs."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from tests.integration import helpers
from tests.integration.helpers import (
    ScriptedServer,
    create_workflow,
    event_types,
    events,
    node,
    run,
    statuses,
    wait_final,
    wait_status,
)

http_server = helpers.http_server


async def run_definition(
    client: httpx.AsyncClient, definition: dict[str, Any], inputs: dict[str, Any] | None = None
) -> dict[str, Any]:
    workflow_id = await create_workflow(client, definition)
    return await wait_final(client, await run(client, workflow_id, inputs))


def chain(*nodes: dict[str, Any]) -> list[dict[str, str]]:
    return [{"source": a["id"], "target": b["id"]} for a, b in itertools.pairwise(nodes)]


# ---------------------------------------------------------------------------- core


async def test_input_output_noop_template_transform(client: httpx.AsyncClient) -> None:
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "input"},
        {"id": "pass_on", "type": "noop"},
        {"id": "greet", "type": "template", "params": {"template": "Hi {{ pass_on.name }}!"}},
        {
            "id": "calc",
            "type": "transform",
            "params": {"expression": "inputs.numbers | sum + start.numbers | length"},
        },
        {
            "id": "done",
            "type": "output",
            "params": {"value": {"text": "{{ greet.text }}", "total": "{{ calc.value }}"}},
        },
    ]
    execution = await run_definition(
        client,
        {
            "name": "core",
            "inputs": {
                "name": {"type": "string", "required": True},
                "numbers": {"type": "array", "default": [1, 2, 3]},
            },
            "nodes": nodes,
            "edges": chain(*nodes),
        },
        {"name": "Ada"},
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "start")["output"] == {"name": "Ada", "numbers": [1, 2, 3]}
    # noop with one upstream passes its output through unchanged.
    assert node(execution, "pass_on")["output"] == {"name": "Ada", "numbers": [1, 2, 3]}
    assert node(execution, "greet")["output"] == {"text": "Hi Ada!"}
    assert node(execution, "calc")["output"] == {"value": 9}  # 6 + 3
    # A whole-string template renders to the native value (9, not "9").
    assert node(execution, "done")["output"] == {"text": "Hi Ada!", "total": 9}
    # Without workflow `outputs`, the output nodes give the execution's outputs.
    assert execution["outputs"] == {"text": "Hi Ada!", "total": 9}
    for entry in execution["nodes"]:
        assert entry["attempts"] == 1
        assert entry["started_at"] and entry["finished_at"]


async def test_noop_with_several_upstreams_maps_them_by_id(client: httpx.AsyncClient) -> None:
    execution = await run_definition(
        client,
        {
            "name": "noop-join",
            "nodes": [
                {"id": "a", "type": "transform", "params": {"expression": "1"}},
                {"id": "b", "type": "transform", "params": {"expression": "2"}},
                {"id": "both", "type": "noop"},
            ],
            "edges": [{"source": "a", "target": "both"}, {"source": "b", "target": "both"}],
            "outputs": {"both": "{{ both }}"},
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert execution["outputs"] == {"both": {"a": {"value": 1}, "b": {"value": 2}}}


# ---------------------------------------------------------------------------- branching

CONDITION = {
    "name": "condition",
    "inputs": {"n": {"type": "integer", "required": True}},
    "nodes": [
        {"id": "check", "type": "condition", "params": {"expression": "inputs.n > 10"}},
        {"id": "big", "type": "template", "params": {"template": "big {{ inputs.n }}"}},
        {"id": "small", "type": "template", "params": {"template": "small {{ inputs.n }}"}},
        {"id": "after_small", "type": "noop"},
    ],
    "edges": [
        {"source": "check", "source_port": "true", "target": "big"},
        {"source": "check", "source_port": "false", "target": "small"},
        {"source": "small", "target": "after_small"},
    ],
}


async def test_condition_takes_the_true_branch(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, CONDITION)
    execution = await wait_final(client, await run(client, workflow_id, {"n": 42}))
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "check")["output"] == {"result": True}
    assert node(execution, "big")["output"] == {"text": "big 42"}
    assert statuses(execution) == {
        "check": "succeeded",
        "big": "succeeded",
        "small": "skipped",
        "after_small": "skipped",
    }
    assert node(execution, "small")["attempts"] == 0
    assert node(execution, "small")["output"] is None
    stream = await events(client, execution["id"])
    assert event_types(stream, "small") == ["node.skipped"]
    assert event_types(stream, "after_small") == ["node.skipped"]


async def test_condition_takes_the_false_branch(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, CONDITION)
    execution = await wait_final(client, await run(client, workflow_id, {"n": 3}))
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "check")["output"] == {"result": False}
    assert statuses(execution) == {
        "check": "succeeded",
        "big": "skipped",
        "small": "succeeded",
        "after_small": "succeeded",
    }
    assert node(execution, "after_small")["output"] == {"text": "small 3"}


SWITCH = {
    "name": "switch",
    "inputs": {"color": {"type": "string", "required": True}},
    "nodes": [
        {
            "id": "route",
            "type": "switch",
            "params": {"expression": "inputs.color", "cases": ["red", "green"]},
        },
        {"id": "on_red", "type": "transform", "params": {"expression": "'stop'"}},
        {"id": "on_green", "type": "transform", "params": {"expression": "'go'"}},
        {"id": "otherwise", "type": "transform", "params": {"expression": "'unknown'"}},
    ],
    "edges": [
        {"source": "route", "source_port": "red", "target": "on_red"},
        {"source": "route", "source_port": "green", "target": "on_green"},
        {"source": "route", "source_port": "default", "target": "otherwise"},
    ],
}


async def test_switch_routes_to_the_matching_case(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, SWITCH)
    execution = await wait_final(client, await run(client, workflow_id, {"color": "green"}))
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "route")["output"] == {"value": "green"}
    assert statuses(execution) == {
        "route": "succeeded",
        "on_red": "skipped",
        "on_green": "succeeded",
        "otherwise": "skipped",
    }
    assert node(execution, "on_green")["output"] == {"value": "go"}


async def test_switch_falls_back_to_default(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, SWITCH)
    execution = await wait_final(client, await run(client, workflow_id, {"color": "blue"}))
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "route")["output"] == {"value": "blue"}
    assert statuses(execution) == {
        "route": "succeeded",
        "on_red": "skipped",
        "on_green": "skipped",
        "otherwise": "succeeded",
    }
    assert node(execution, "otherwise")["output"] == {"value": "unknown"}


# ---------------------------------------------------------------------------- merge


async def test_merge_all_collects_items_in_edge_order(client: httpx.AsyncClient) -> None:
    # The slow branch finishes last but comes first in edge order.
    execution = await run_definition(
        client,
        {
            "name": "merge-all",
            "nodes": [
                {"id": "slow", "type": "delay", "params": {"seconds": 0.2}},
                {"id": "fast", "type": "transform", "params": {"expression": "'fast'"}},
                {"id": "skip_me", "type": "condition", "params": {"expression": "false"}},
                {"id": "never", "type": "transform", "params": {"expression": "'never'"}},
                {"id": "join", "type": "merge", "params": {"mode": "all"}},
            ],
            "edges": [
                {"source": "skip_me", "source_port": "true", "target": "never"},
                {"source": "slow", "target": "join"},
                {"source": "never", "target": "join"},
                {"source": "fast", "target": "join"},
            ],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert statuses(execution)["never"] == "skipped"
    # It waited for the slow branch, not for the one that could no longer arrive.
    assert node(execution, "join")["output"] == {"items": [{"waited_s": 0.2}, {"value": "fast"}]}
    assert node(execution, "join")["attempts"] == 1


async def test_merge_any_fires_once_with_the_first_branch(client: httpx.AsyncClient) -> None:
    execution = await run_definition(
        client,
        {
            "name": "merge-any",
            "nodes": [
                {"id": "slow", "type": "delay", "params": {"seconds": 0.4}},
                {"id": "fast", "type": "transform", "params": {"expression": "'fast'"}},
                {"id": "first", "type": "merge", "params": {"mode": "any"}},
                {"id": "after", "type": "noop"},
            ],
            "edges": [
                {"source": "slow", "target": "first"},
                {"source": "fast", "target": "first"},
                {"source": "first", "target": "after"},
            ],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "first")["output"] == {"items": [{"value": "fast"}]}
    assert node(execution, "first")["attempts"] == 1
    assert node(execution, "after")["output"] == {"items": [{"value": "fast"}]}
    assert node(execution, "slow")["status"] == "succeeded"
    stream = await events(client, execution["id"])
    assert event_types(stream, "first").count("node.started") == 1
    assert event_types(stream, "first").count("node.completed") == 1
    # It fired before the slow branch finished.
    seqs = {(e["type"], e["node_id"]): e["seq"] for e in stream}
    assert seqs[("node.completed", "first")] < seqs[("node.completed", "slow")]


async def test_list_input_port_aggregates_every_edge(client: httpx.AsyncClient) -> None:
    # merge is the node type that declares a list input port ("in"): several edges into
    # it are aggregated, in edge order, whatever order the sources finish in.
    execution = await run_definition(
        client,
        {
            "name": "aggregate",
            "nodes": [
                {"id": "one", "type": "delay", "params": {"seconds": 0.15}},
                {"id": "two", "type": "transform", "params": {"expression": "2"}},
                {"id": "three", "type": "transform", "params": {"expression": "3"}},
                {"id": "gather", "type": "merge"},
            ],
            "edges": [
                {"source": "one", "target": "gather", "target_port": "in"},
                {"source": "two", "target": "gather", "target_port": "in"},
                {"source": "three", "target": "gather", "target_port": "in"},
            ],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "gather")["output"] == {
        "items": [{"waited_s": 0.15}, {"value": 2}, {"value": 3}]
    }


# ---------------------------------------------------------------------------- delay, http


async def test_delay_waits(client: httpx.AsyncClient) -> None:
    execution = await run_definition(
        client,
        {"name": "delay", "nodes": [{"id": "wait", "type": "delay", "params": {"seconds": 0.3}}]},
    )
    assert execution["status"] == "succeeded", execution["error"]
    wait = node(execution, "wait")
    assert wait["output"] == {"waited_s": 0.3}
    assert wait["duration_ms"] >= 300


async def test_http_request_returns_status_json_body_and_headers(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    json_url = http_server.route(
        "/items", status=201, json={"items": [1, 2]}, headers={"x-trace": "abc"}
    )
    text_url = http_server.route("/text", body="plain words")
    execution = await run_definition(
        client,
        {
            "name": "http",
            "inputs": {"token": {"type": "string", "required": True}},
            "nodes": [
                {
                    "id": "post",
                    "type": "http_request",
                    "params": {
                        "method": "POST",
                        "url": json_url,
                        "headers": {"authorization": "Bearer {{ inputs.token }}"},
                        "query": {"page": 2},
                        "json": {"name": "{{ inputs.token }}", "n": 1},
                    },
                },
                {"id": "get_text", "type": "http_request", "params": {"url": text_url}},
            ],
        },
        {"token": "t0k"},
    )
    assert execution["status"] == "succeeded", execution["error"]
    post = node(execution, "post")["output"]
    assert post["status"] == 201
    assert post["json"] == {"items": [1, 2]}
    assert post["body"] == '{"items": [1, 2]}'
    assert post["headers"]["x-trace"] == "abc"
    assert post["headers"]["content-type"] == "application/json"
    text = node(execution, "get_text")["output"]
    assert (text["status"], text["body"], text["json"]) == (200, "plain words", None)
    sent = next(r for r in http_server.received if r.path == "/items")
    assert sent.method == "POST"
    assert sent.query == "page=2"
    assert sent.headers["authorization"] == "Bearer t0k"
    assert httpx.Response(200, content=sent.body).json() == {"name": "t0k", "n": 1}


async def test_http_request_keeps_the_query_string_of_its_url(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    # `url: https://host/search?q=x` without a `query` param must still send `?q=x`.
    url = http_server.route("/search", json={"ok": True})
    execution = await run_definition(
        client,
        {
            "name": "http-query",
            "nodes": [{"id": "get", "type": "http_request", "params": {"url": url + "?q=x&n=1"}}],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert [r.query for r in http_server.received] == ["q=x&n=1"]


# ---------------------------------------------------------------------------- code


async def test_code_returns_its_result(client: httpx.AsyncClient) -> None:
    execution = await run_definition(
        client,
        {
            "name": "code",
            "inputs": {"words": {"type": "array", "required": True}},
            "nodes": [
                {
                    "id": "count",
                    "type": "code",
                    "params": {
                        "source": (
                            "import collections\n"
                            "counts = collections.Counter(inputs['inputs']['words'])\n"
                            "print('counted', len(counts))\n"
                            "result = {'most': counts.most_common(1)[0][0], 'n': len(counts)}\n"
                        )
                    },
                }
            ],
        },
        {"words": ["a", "b", "a", "c", "a"]},
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "count")["output"] == {"result": {"most": "a", "n": 3}}


# ---------------------------------------------------------------------------- ai and tools


async def test_llm_with_the_echo_model(client: httpx.AsyncClient) -> None:
    execution = await run_definition(
        client,
        {
            "name": "llm",
            "inputs": {"topic": {"type": "string", "required": True}},
            "nodes": [
                {
                    "id": "ask",
                    "type": "llm",
                    "params": {"model": "echo", "prompt": "Tell me about {{ inputs.topic }}"},
                }
            ],
        },
        {"topic": "looms"},
    )
    assert execution["status"] == "succeeded", execution["error"]
    output = node(execution, "ask")["output"]
    assert output["text"] == "echo: Tell me about looms"
    assert output["model"] == "echo"
    assert output["usage"]["prompt_tokens"] == 4
    assert output["usage"]["completion_tokens"] == 5


async def test_agent_calls_the_calculator(client: httpx.AsyncClient) -> None:
    # echo answers a `[[tool:NAME {args}]]` directive in the last user message with that
    # tool call, then answers the tool's result as text.
    execution = await run_definition(
        client,
        {
            "name": "agent",
            "nodes": [
                {
                    "id": "solver",
                    "type": "agent",
                    "params": {
                        "model": "echo",
                        "instructions": "You are a careful calculator.",
                        "prompt": 'What is 2+3? [[tool:calculator {"expression": "2+3"}]]',
                        "tools": ["calculator"],
                        "max_steps": 3,
                    },
                }
            ],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    output = node(execution, "solver")["output"]
    steps = output["steps"]
    assert [step["type"] for step in steps] == ["tool_call", "tool_result", "final"]
    assert steps[0]["name"] == "calculator"
    assert steps[0]["arguments"] == {"expression": "2+3"}
    assert steps[1]["result"] == {"result": 5}
    assert "5" in output["text"]
    assert output["text"].startswith("echo: tool calculator returned")
    assert steps[2]["text"] == output["text"]


async def test_tool_node_calls_the_calculator(client: httpx.AsyncClient) -> None:
    execution = await run_definition(
        client,
        {
            "name": "tool",
            "inputs": {"x": {"type": "integer", "required": True}},
            "nodes": [
                {
                    "id": "calc",
                    "type": "tool",
                    "params": {
                        "name": "calculator",
                        "arguments": {"expression": "{{ inputs.x }} * 7 + 1"},
                    },
                }
            ],
        },
        {"x": 6},
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "calc")["output"] == {"result": {"result": 43}}


# ---------------------------------------------------------------------------- map, subworkflow

CHILD = {
    "name": "child",
    "inputs": {"item": {"type": "any"}, "index": {"type": "integer", "default": 0}},
    "nodes": [
        {
            "id": "label",
            "type": "template",
            "params": {"template": "#{{ inputs.index }}={{ inputs.item }}"},
        }
    ],
    "outputs": {"label": "{{ label.text }}", "doubled": "{{ inputs.item * 2 }}"},
}


async def test_map_runs_an_inline_node_per_item_in_item_order(
    client: httpx.AsyncClient, http_server: ScriptedServer
) -> None:
    # Earlier items are slower, so they finish last: results must still be in item order.
    for index, (item, delay) in enumerate(zip("abcd", [0.3, 0.2, 0.1, 0.0], strict=True)):
        http_server.route(f"/item/{index}/{item}", json={"index": index}, sleep_s=delay)
    execution = await run_definition(
        client,
        {
            "name": "map-inline",
            "inputs": {"items": {"type": "array", "required": True}},
            "nodes": [
                {
                    "id": "each",
                    "type": "map",
                    "params": {
                        "items": "{{ inputs.items }}",
                        "concurrency": 2,
                        "node": {
                            "type": "http_request",
                            "params": {"url": http_server.url("/item/{{ index }}/{{ item }}")},
                        },
                    },
                }
            ],
        },
        {"items": ["a", "b", "c", "d"]},
    )
    assert execution["status"] == "succeeded", execution["error"]
    results = node(execution, "each")["output"]["results"]
    assert [r["json"] for r in results] == [{"index": i} for i in range(4)]
    assert [r["status"] for r in results] == [200] * 4
    assert http_server.calls == {"/item/0/a": 1, "/item/1/b": 1, "/item/2/c": 1, "/item/3/d": 1}
    # concurrency 2: never more than two items in flight at once.
    assert http_server.max_in_flight == 2


async def test_map_over_a_child_workflow(client: httpx.AsyncClient) -> None:
    child_id = await create_workflow(client, CHILD)
    execution = await run_definition(
        client,
        {
            "name": "map-child",
            "nodes": [
                {
                    "id": "each",
                    "type": "map",
                    "params": {"items": [5, 6, 7], "workflow_id": child_id, "concurrency": 2},
                }
            ],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "each")["output"] == {
        "results": [
            {"label": "#0=5", "doubled": 10},
            {"label": "#1=6", "doubled": 12},
            {"label": "#2=7", "doubled": 14},
        ]
    }
    children = (await client.get("/api/v1/executions", params={"workflow_id": child_id})).json()[
        "items"
    ]
    assert len(children) == 3
    assert {c["parent_execution_id"] for c in children} == {execution["id"]}
    assert {c["status"] for c in children} == {"succeeded"}


async def test_subworkflow_returns_the_child_outputs(client: httpx.AsyncClient) -> None:
    child_id = await create_workflow(client, CHILD)
    execution = await run_definition(
        client,
        {
            "name": "parent",
            "nodes": [
                {
                    "id": "sub",
                    "type": "subworkflow",
                    "params": {"workflow_id": child_id, "inputs": {"item": 21, "index": 4}},
                },
                {"id": "done", "type": "output", "params": {"value": "{{ sub.doubled }}"}},
            ],
            "edges": [{"source": "sub", "target": "done"}],
        },
    )
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "sub")["output"] == {"label": "#4=21", "doubled": 42}
    assert execution["outputs"] == {"done": 42}
    children = (await client.get("/api/v1/executions", params={"workflow_id": child_id})).json()[
        "items"
    ]
    assert len(children) == 1
    child = await helpers.get_execution(client, children[0]["id"])
    assert child["parent_execution_id"] == execution["id"]
    assert child["trigger"] == "subworkflow"
    assert child["outputs"] == {"label": "#4=21", "doubled": 42}


# ---------------------------------------------------------------------------- human input

APPROVAL = {
    "name": "approval",
    "nodes": [
        {
            "id": "ask",
            "type": "human_input",
            "params": {
                "prompt": "Approve the release?",
                "schema": {
                    "type": "object",
                    "properties": {
                        "approved": {"type": "boolean"},
                        "reviewer": {"type": "string", "minLength": 2},
                    },
                    "required": ["approved", "reviewer"],
                },
            },
        },
        {"id": "done", "type": "output", "params": {"value": {"ok": "{{ ask.data.approved }}"}}},
    ],
    "edges": [{"source": "ask", "target": "done"}],
}


async def test_human_input_waits_validates_and_resumes(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, APPROVAL)
    execution_id = await run(client, workflow_id)
    waiting = await wait_status(client, execution_id, "waiting", node_id="ask")
    assert waiting["status"] == "running"
    ask = node(waiting, "ask")
    assert ask["waiting"]["prompt"] == "Approve the release?"
    assert ask["waiting"]["schema"]["required"] == ["approved", "reviewer"]
    assert node(waiting, "done")["status"] == "pending"

    bad = await client.post(
        f"/api/v1/executions/{execution_id}/input",
        json={"node_id": "ask", "data": {"approved": "yes", "reviewer": "x"}},
    )
    assert bad.status_code == 422, bad.text
    error = bad.json()["error"]
    assert error["code"] == "invalid_argument"
    fields = sorted(problem["field"] for problem in error["details"])
    assert fields == ["data['approved']", "data['reviewer']"]
    assert "boolean" in " ".join(problem["message"] for problem in error["details"])
    # Still waiting after a rejected submission.
    still = await helpers.get_execution(client, execution_id)
    assert node(still, "ask")["status"] == "waiting"

    good = await client.post(
        f"/api/v1/executions/{execution_id}/input",
        json={"node_id": "ask", "data": {"approved": True, "reviewer": "grace"}},
    )
    assert good.status_code == 200, good.text
    execution = await wait_final(client, execution_id)
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "ask")["output"] == {"data": {"approved": True, "reviewer": "grace"}}
    assert execution["outputs"] == {"ok": True}
    stream = await events(client, execution_id)
    assert "node.waiting" in event_types(stream, "ask")

    # The node is no longer waiting: a second answer is a conflict, not a 500.
    again = await client.post(
        f"/api/v1/executions/{execution_id}/input",
        json={"node_id": "ask", "data": {"approved": False, "reviewer": "bob"}},
    )
    assert again.status_code == 409, again.text


async def test_human_input_times_out(client: httpx.AsyncClient) -> None:
    execution = await run_definition(
        client,
        {
            "name": "impatient",
            "nodes": [
                {
                    "id": "ask",
                    "type": "human_input",
                    "params": {"prompt": "Quick!", "timeout_s": 0.5},
                },
                {"id": "after", "type": "noop"},
            ],
            "edges": [{"source": "ask", "target": "after"}],
        },
    )
    assert execution["status"] == "failed"
    ask = node(execution, "ask")
    assert ask["status"] == "failed"
    assert ask["error"]["type"] == "Timeout"
    assert node(execution, "after")["status"] == "cancelled"
    assert execution["error"]["type"] == "NodeFailed"
    assert "ask" in execution["error"]["message"]
