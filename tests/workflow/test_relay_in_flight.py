"""The outbox relay's publish loop under a backlog: bounded in flight, each execution in order."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

from heddle.v1 import events_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import async_sessionmaker

from libs.common.bus import InProcessBus
from libs.common.messages import OutgoingMessage
from libs.common.tracing import (
    configure_tracing,
    current_traceparent,
    remove_span_processor,
    tracer,
)
from services.workflow.relay import OutboxRelay
from tests.helpers import assert_eventually


class SlowBus(InProcessBus):
    """Holds every publish until released; records the events in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.seqs: dict[str, list[int]] = {}

    async def publish_many(self, exchange: str, messages: Sequence[OutgoingMessage]) -> None:
        self.in_flight += len(messages)
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self.release.wait()
        self.in_flight -= len(messages)
        for _, body, _ in messages:
            event = events_pb2.Event.FromString(body)
            self.seqs.setdefault(event.execution_id, []).append(event.seq)


def _events(execution_id: str, first_seq: int, count: int) -> list[dict[str, object]]:
    now = dt.datetime.now(dt.UTC)
    return [
        {
            "execution_id": execution_id,
            "seq": seq,
            "type": "node.completed",
            "node_id": "n",
            "ts": now,
            "data": {},
            "trace_id": "",
            "workflow_id": "w",
            "tenant_id": "t",
        }
        for seq in range(first_seq, first_seq + count)
    ]


async def test_a_backlog_is_published_in_rounds_each_execution_in_order() -> None:
    bus = SlowBus()
    relay = OutboxRelay(async_sessionmaker(), bus, max_in_flight=1000)
    # 20 batches of 100 events for each of 2 executions, handed over before any confirm.
    for batch in range(20):
        for execution_id in ("a", "b"):
            relay.enqueue(_events(execution_id, batch * 100 + 1, 100))
    loop = asyncio.create_task(relay._publish_loop())
    try:
        # A round takes batches until it holds max_in_flight events: 10 of 100 here; the
        # next round waits for their confirms.
        await assert_eventually(lambda: bus.in_flight == 1000)
        await asyncio.sleep(0.1)
        assert bus.in_flight == 1000
        bus.release.set()
        await assert_eventually(lambda: relay.published == 4000)
    finally:
        loop.cancel()
    assert bus.most_in_flight == 1000
    assert bus.seqs == {"a": list(range(1, 2001)), "b": list(range(1, 2001))}


class RecordingBus(InProcessBus):
    """Records the events of each publish_many call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[tuple[str, int]]] = []

    async def publish_many(self, exchange: str, messages: Sequence[OutgoingMessage]) -> None:
        events = [events_pb2.Event.FromString(body) for _, body, _ in messages]
        self.calls.append([(event.execution_id, event.seq) for event in events])


async def test_batches_committed_within_the_linger_go_out_in_one_publish() -> None:
    bus = RecordingBus()
    relay = OutboxRelay(async_sessionmaker(), bus, linger_s=0.2)
    loop = asyncio.create_task(relay._publish_loop())
    try:
        # A chain's steps: a batch of two events, then the next ones while the first lingers.
        relay.enqueue(_events("a", 1, 2))
        await asyncio.sleep(0.05)
        assert bus.calls == []
        relay.enqueue(_events("a", 3, 2))
        relay.enqueue(_events("b", 1, 1))
        await assert_eventually(lambda: relay.published == 5)
    finally:
        loop.cancel()
    # One publish_many for the round: both executions, each in order.
    assert len(bus.calls) == 1
    assert [key for key in bus.calls[0] if key[0] == "a"] == [("a", seq) for seq in (1, 2, 3, 4)]
    assert sorted(bus.calls[0]) == [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1)]


async def test_stop_publishes_what_lingers_and_what_is_queued() -> None:
    bus = RecordingBus()
    relay = OutboxRelay(async_sessionmaker(), bus, linger_s=30.0)
    relay._tasks = [asyncio.create_task(relay._publish_loop())]
    relay.enqueue(_events("a", 1, 2))
    await asyncio.sleep(0.05)  # taken by the loop, lingering
    relay.enqueue(_events("a", 3, 1))
    await relay.stop()
    assert [seq for call in bus.calls for _, seq in call] == [1, 2, 3]
    assert relay.published == 3


class HeaderBus(InProcessBus):
    """Records each published event's (execution id, traceparent header)."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[tuple[str, str]] = []

    async def publish_many(self, exchange: str, messages: Sequence[OutgoingMessage]) -> None:
        for _, body, headers in messages:
            event = events_pb2.Event.FromString(body)
            self.headers.append((event.execution_id, headers.get("traceparent", "")))


async def test_each_execution_of_a_round_has_its_own_producer_span() -> None:
    memory = InMemorySpanExporter()
    processor = SimpleSpanProcessor(memory)
    configure_tracing("heddle", processor=processor)
    try:
        with tracer(__name__).start_as_current_span("execution a") as root:
            trace_parent = current_traceparent(root)
        bus = HeaderBus()
        relay = OutboxRelay(async_sessionmaker(), bus)
        # One round: a traced execution, then one without a trace root.
        await relay._publish([(trace_parent, _events("a", 1, 2)), ("", _events("b", 1, 1))])
    finally:
        remove_span_processor(processor)
    producers = {
        (span.attributes or {}).get("messaging.batch.message_count", 1): span
        for span in memory.get_finished_spans()
        if span.name == "publish heddle.events"
    }
    assert set(producers) == {2, 1}
    a, b = producers[2], producers[1]
    assert a.parent is not None and a.parent.span_id == root.get_span_context().span_id
    assert b.parent is None  # a root, not a child of a's span
    assert a.context.trace_id != b.context.trace_id
    assert bus.headers == [("a", _traceparent(a)), ("a", _traceparent(a)), ("b", _traceparent(b))]


def _traceparent(span: ReadableSpan) -> str:
    context = span.context
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
