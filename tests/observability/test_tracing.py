"""One trace per execution: gateway → workflow → every node attempt → ai and tool, and the
broker hop to the log service, with correct parent links (embedded stack, in-memory spans)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from libs.common.tracing import (
    configure_tracing,
    context_from_traceparent,
    current_traceparent,
    trace_id_of,
    tracer,
)
from tests.helpers import assert_eventually
from tests.observability.conftest import run_workflow

AI_AND_TOOLS = {
    "name": "traced",
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "Say hi"}},
        {
            "id": "calc",
            "type": "tool",
            "params": {"name": "calculator", "arguments": {"expression": "6*7"}},
        },
        # Printed lines become `log` events: the log service consumes them from the broker.
        {"id": "note", "type": "code", "params": {"source": "print('noted')\nresult = 1"}},
        {"id": "done", "type": "output", "params": {"value": {"answer": "{{ calc.result }}"}}},
    ],
    "edges": [
        {"source": "start", "target": "ask"},
        {"source": "start", "target": "calc"},
        {"source": "start", "target": "note"},
        {"source": "ask", "target": "done"},
        {"source": "calc", "target": "done"},
        {"source": "note", "target": "done"},
    ],
}


# A finished span whose attributes and parent the tests know are set (the SDK's own type has
# them Optional, which every assertion would have to re-check).
Span = Any


def _hex(trace_id: int) -> str:
    return f"{trace_id:032x}"


def _one(spans: Sequence[Span], name: str, **attributes: object) -> Span:
    found = [
        span
        for span in spans
        if span.name == name
        and all((span.attributes or {}).get(key) == value for key, value in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, [s.name for s in spans])
    return found[0]


def _descends(span: Span, ancestor: Span, spans: Sequence[Span]) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return False


async def test_one_trace_covers_an_execution_end_to_end(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    execution = await run_workflow(client, AI_AND_TOOLS)
    assert execution["status"] == "succeeded", execution["error"]
    trace_id = execution["trace_id"]
    assert trace_id and len(trace_id) == 32

    def consumed() -> bool:
        return any(
            s.name == "process heddle.events" and _hex(s.context.trace_id) == trace_id
            for s in exporter.get_finished_spans()
        )

    await assert_eventually(
        consumed, timeout=15, message="the log service never consumed a traced event"
    )
    every: list[Span] = list(exporter.get_finished_spans())
    spans = [s for s in every if _hex(s.context.trace_id) == trace_id]

    # Every span that says it belongs to this execution is in its trace.
    tagged = [s for s in every if s.attributes.get("heddle.execution_id") == execution["id"]]
    assert tagged and all(_hex(s.context.trace_id) == trace_id for s in tagged)

    request = _one(spans, "POST /api/v1/workflows/{workflow_id}/execute")
    assert request.kind == SpanKind.SERVER and request.parent is None
    assert request.attributes["heddle.service"] == "gateway"
    rpc = _one(spans, "heddle.v1.WorkflowService/StartExecution")
    assert rpc.kind == SpanKind.SERVER and rpc.attributes["heddle.service"] == "workflow"
    assert _descends(rpc, request, spans)
    start = _one(spans, "execution.start", **{"heddle.execution_id": execution["id"]})
    assert start.parent is not None and start.parent.span_id == rpc.context.span_id

    attempts = {
        node["node_id"]: _one(spans, f"node.attempt {node['node_id']}")
        for node in execution["nodes"]
    }
    assert sum(node["attempts"] for node in execution["nodes"]) == len(attempts) == 5
    for node_id, attempt in attempts.items():
        assert attempt.attributes["heddle.node_id"] == node_id
        assert attempt.attributes["heddle.attempt"] == 1
        assert attempt.attributes["heddle.service"] == "workflow"
        assert attempt.status.status_code != StatusCode.ERROR
        assert _descends(attempt, start, spans)
        executed = [
            s
            for s in spans
            if s.name.startswith("node.execute ") and s.parent.span_id == attempt.context.span_id
        ]
        if node_id == "start":
            # An input node's attempt ends in the workflow replica (runner._run_here): its
            # span says so and no node replica executed it.
            assert attempt.attributes["heddle.ran_in"] == "workflow"
            assert executed == [], node_id
            continue
        assert "heddle.ran_in" not in attempt.attributes, node_id
        assert len(executed) == 1, node_id
        assert executed[0].attributes["heddle.service"] == "node"
        assert executed[0].attributes["heddle.node_id"] == node_id

    def executed_by(node_id: str) -> Span:
        return _one(spans, f"node.execute {attempts[node_id].attributes['heddle.node_type']}")

    # Attempts travel on the dispatcher's long-lived Work stream, which belongs to no one
    # execution: each node.execute joins its node.attempt through the task's traceparent
    # (checked above), and the stream itself stays out of the trace.
    assert not [s for s in spans if s.name.endswith("NodeService/Work")]

    ai = [
        s
        for s in spans
        if s.kind == SpanKind.SERVER and s.attributes.get("rpc.service") == "heddle.v1.AiService"
    ]
    assert len(ai) == 1 and ai[0].attributes["rpc.method"] in ("Complete", "StreamComplete")
    assert ai[0].attributes["heddle.service"] == "ai"
    assert _descends(ai[0], executed_by("ask"), spans)
    tool = _one(spans, "heddle.v1.ToolService/CallTool")
    assert tool.kind == SpanKind.SERVER and tool.attributes["heddle.service"] == "tool"
    assert _descends(tool, executed_by("calc"), spans)
    assert not _descends(tool, executed_by("ask"), spans)

    # The broker hop: the relay's PRODUCER span and the log service's CONSUMER span under it.
    producers = [s for s in spans if s.name == "publish heddle.events"]
    assert producers and all(s.kind == SpanKind.PRODUCER for s in producers)
    assert all(_descends(s, start, spans) for s in producers)
    consumers = [s for s in spans if s.name == "process heddle.events"]
    assert consumers and all(
        s.kind == SpanKind.CONSUMER and s.attributes["heddle.service"] == "log" for s in consumers
    )
    assert all(any(_descends(c, p, spans) for p in producers) for c in consumers)


async def test_an_incoming_traceparent_is_continued(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.get(
        "/api/v1/workflows", headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"}
    )
    assert response.status_code == 200
    spans: list[Span] = [
        s for s in exporter.get_finished_spans() if _hex(s.context.trace_id) == caller_trace
    ]
    request = _one(spans, "GET /api/v1/workflows")
    assert request.parent is not None and request.parent.span_id == 0x00F067AA0BA902B7
    listed = _one(spans, "heddle.v1.WorkflowService/ListWorkflows")
    assert _descends(listed, request, spans)


async def test_a_fired_schedule_continues_the_trace_through_the_broker(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    definition = {"name": "fired", "nodes": [{"id": "only", "type": "noop"}]}
    created = await client.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    schedule = await client.post(
        "/api/v1/schedules",
        json={"workflow_id": created.json()["id"], "cron": "0 0 1 1 *", "enabled": False},
    )
    assert schedule.status_code == 201, schedule.text
    fired = await client.post(f"/api/v1/schedules/{schedule.json()['id']}/trigger")
    assert fired.status_code == 202, fired.text

    def trace_of_request() -> list[Span]:
        # Spans of this request's trace only: other stacks of this process may be tracing too.
        spans: list[Span] = list(exporter.get_finished_spans())
        request = [s for s in spans if s.name == "POST /api/v1/schedules/{schedule_id}/trigger"]
        if len(request) != 1:
            return []
        return [s for s in spans if s.context.trace_id == request[0].context.trace_id]

    await assert_eventually(
        lambda: any(s.name == "execution.start" for s in trace_of_request()),
        timeout=15,
        message="the fire started no execution in the request's trace",
    )
    spans = trace_of_request()
    request = _one(spans, "POST /api/v1/schedules/{schedule_id}/trigger")
    publish = _one(spans, "publish heddle.triggers")
    assert publish.kind == SpanKind.PRODUCER and publish.attributes["heddle.service"] == "scheduler"
    process = _one(spans, "process heddle.triggers")
    assert process.kind == SpanKind.CONSUMER and process.attributes["heddle.service"] == "workflow"
    start = _one(spans, "execution.start")
    assert _descends(publish, request, spans)
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert start.parent is not None and start.parent.span_id == process.context.span_id


def test_unread_spans_are_not_recorded_but_still_carry_real_ids() -> None:
    configure_tracing("heddle")  # and no exporter, no processor (OTEL_ variables unset)
    span = tracer("workflow").start_span("execution.start")
    assert not span.is_recording()
    trace_id = trace_id_of(span)
    assert len(trace_id) == 32 and int(trace_id, 16)
    child = tracer("node").start_span(
        "node.execute", context=context_from_traceparent(current_traceparent(span))
    )
    assert trace_id_of(child) == trace_id
    assert current_traceparent(child) != current_traceparent(span)


async def test_run_and_wait_is_one_trace_through_its_direct_call(
    exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    """POST /run calls RunExecutionOnce on a channel without interceptors (the gateway's hot
    path): the call still has its CLIENT span under the request, ended with its status, and
    the workflow service's SERVER span under it (the trace context and token were sent)."""
    definition = {
        "name": "traced-run",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "done", "type": "output", "params": {"value": "ok"}},
        ],
        "edges": [{"source": "start", "target": "done"}],
    }
    created = await client.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    ran = await client.post(
        f"/api/v1/workflows/{created.json()['id']}/run", params={"wait": 30}, json={}
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["status"] == "succeeded"
    trace_id = ran.json()["trace_id"]
    name = "grpc.client heddle.v1.WorkflowService/RunExecutionOnce"

    def in_trace() -> list[Span]:
        return [s for s in exporter.get_finished_spans() if _hex(s.context.trace_id) == trace_id]

    await assert_eventually(
        lambda: any(s.name == name for s in in_trace()),
        timeout=10,
        message="the RunExecutionOnce call's CLIENT span never ended",
    )
    spans = in_trace()
    request = _one(spans, "POST /api/v1/workflows/{workflow_id}/run")
    call = _one(spans, name)
    assert call.kind == SpanKind.CLIENT
    assert _descends(call, request, spans)
    assert call.attributes["rpc.grpc.status_code"] == 0
    served = _one(spans, "heddle.v1.WorkflowService/RunExecutionOnce")
    assert served.kind == SpanKind.SERVER and served.attributes["heddle.service"] == "workflow"
    assert served.parent is not None and served.parent.span_id == call.context.span_id
