"""The log consumer: batching, ack after commit, log events; over both buses and databases."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from heddle.v1 import events_pb2, log_pb2, log_pb2_grpc
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.bus import EVENTS_EXCHANGE, LOGS_EXCHANGE, EventBus, InProcessBus
from libs.common.logging import attempt_var, execution_id_var, node_id_var
from libs.common.logship import LogShipper
from libs.common.rabbitmq import RabbitBus
from services.log import repository
from services.log.consumer import LogConsumer
from services.log.models import LogRecordRow
from services.log.server import serve
from services.log.settings import LogSettings
from tests.helpers import assert_eventually
from tests.infra_fixtures import delete_rabbit_exchanges, delete_rabbit_queues

pytestmark = pytest.mark.integration


@pytest.fixture
async def names(bus: EventBus) -> AsyncIterator[dict[str, str]]:
    """An exchange and queues of this test alone (deleted afterwards on RabbitMQ)."""
    suffix = uuid.uuid4().hex[:10]
    created = {
        "exchange": f"test.logs.{suffix}",
        "records": f"test.log.records.{suffix}",
        "events": f"test.log.events.{suffix}",
    }
    yield created
    if isinstance(bus, RabbitBus):
        await delete_rabbit_queues(created["records"], created["events"])
        await delete_rabbit_exchanges(created["exchange"])


def log_record(execution_id: str, i: int, **overrides: Any) -> bytes:
    record = events_pb2.LogRecord(
        execution_id=execution_id,
        node_id="n1",
        attempt=1,
        level="info",
        message=f"line {i}",
        logger="test",
        service="node",
        fields_json=jsonutil.dumps({"i": i}),
        **overrides,
    )
    record.ts.FromDatetime(dt.datetime(2024, 5, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i))
    return record.SerializeToString()


async def count(sessions: async_sessionmaker[AsyncSession], execution_id: str) -> int:
    async with sessions() as session:
        return int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(LogRecordRow)
                    .where(LogRecordRow.execution_id == execution_id)
                )
            ).scalar_one()
        )


async def test_records_are_written_in_batches(
    sessions: async_sessionmaker[AsyncSession], bus: EventBus, names: dict[str, str]
) -> None:
    consumer = LogConsumer(
        sessions,
        bus,
        batch_size=10,
        flush_interval_s=0.3,
        records_queue=names["records"],
        records_exchange=names["exchange"],
        events_queue=None,
    )
    await consumer.start()
    execution_id = str(uuid.uuid4())
    try:
        for i in range(25):
            await bus.publish(names["exchange"], "log.info", log_record(execution_id, i))

        async def stored() -> bool:
            return await count(sessions, execution_id) == 25

        await assert_eventually(stored)
        # Two full batches by size, the rest by the interval: far fewer writes than records.
        assert consumer.batches_written <= 5
    finally:
        await consumer.stop()
    async with sessions() as session:
        rows, _ = await repository.query_records(
            session, repository.LogQuery(tenant_id="default", execution_id=execution_id)
        )
    assert [r.fields["i"] for r in rows] == list(range(25))
    assert rows[0].level_no == 20 and rows[0].service == "node"


async def test_failed_write_is_retried_and_nothing_is_lost(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = InProcessBus()
    real_insert = repository.insert_records
    failures = {"left": 1}

    async def flaky_insert(session: AsyncSession, rows: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("database went away")
        await real_insert(session, rows)

    monkeypatch.setattr(repository, "insert_records", flaky_insert)
    consumer = LogConsumer(sessions, bus, batch_size=5, flush_interval_s=0.05, events_queue=None)
    await consumer.start()
    execution_id = str(uuid.uuid4())
    try:
        for i in range(5):
            await bus.publish(LOGS_EXCHANGE, "log.info", log_record(execution_id, i))

        async def stored() -> bool:
            return await count(sessions, execution_id) == 5

        await assert_eventually(stored)
    finally:
        await consumer.stop()
        await bus.close()
    assert failures["left"] == 0
    assert bus.dead_letters("log.records") == []


async def test_log_events_are_stored_too(
    sessions: async_sessionmaker[AsyncSession], bus: EventBus, names: dict[str, str]
) -> None:
    consumer = LogConsumer(
        sessions,
        bus,
        batch_size=50,
        flush_interval_s=0.05,
        records_queue=names["records"],
        records_exchange=names["exchange"],
        events_queue=names["events"],
    )
    await consumer.start()
    execution_id = str(uuid.uuid4())
    try:
        event = events_pb2.Event(
            execution_id=execution_id,
            seq=3,
            type="log",
            node_id="n2",
            data_json=jsonutil.dumps({"level": "warning", "message": "slow upstream"}),
        )
        await bus.publish(EVENTS_EXCHANGE, "log", event.SerializeToString())

        async def stored() -> bool:
            return await count(sessions, execution_id) == 1

        await assert_eventually(stored)
    finally:
        await consumer.stop()
    async with sessions() as session:
        rows, _ = await repository.query_records(
            session, repository.LogQuery(tenant_id="default", execution_id=execution_id)
        )
    assert rows[0].level == "warning" and rows[0].node_id == "n2"
    assert rows[0].message == "slow upstream"


async def test_shipped_logs_are_queryable_over_grpc(tmp_path: Path) -> None:
    """logship handler -> bus -> consumer -> database -> QueryLogs, all in one process."""
    bus = InProcessBus()
    settings = LogSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'log.db'}",
        grpc_port=0,
        flush_interval_s=0.02,
    )
    server = await serve(settings, bus=bus)
    shipper = LogShipper(bus, service="node")
    await shipper.start()
    logger = logging.getLogger("test.logship")
    logger.addHandler(shipper.handler)
    logger.setLevel(logging.DEBUG)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = log_pb2_grpc.LogServiceStub(channel)
    execution_id = str(uuid.uuid4())
    try:
        logger.info("outside any node attempt")  # not shipped
        tokens = [
            execution_id_var.set(execution_id),
            node_id_var.set("fetch"),
            attempt_var.set(2),
        ]
        try:
            logger.info("fetching %s", "https://example.org", extra={"bytes": 10})
            logger.error("fetch failed")
            logger.debug("details")
        finally:
            for var, token in zip(
                (execution_id_var, node_id_var, attempt_var), tokens, strict=True
            ):
                var.reset(token)  # type: ignore[attr-defined]

        async def all_stored() -> bool:
            reply = await stub.QueryLogs(
                log_pb2.QueryLogsRequest(execution_id=execution_id), timeout=5
            )
            return len(reply.records) == 2

        await assert_eventually(all_stored)  # debug is below the handler's INFO level
        reply = await stub.QueryLogs(
            log_pb2.QueryLogsRequest(execution_id=execution_id, level="error"), timeout=5
        )
        assert [r.message for r in reply.records] == ["fetch failed"]
        reply = await stub.QueryLogs(
            log_pb2.QueryLogsRequest(execution_id=execution_id, text="EXAMPLE"), timeout=5
        )
        [record] = reply.records
        assert record.node_id == "fetch" and record.attempt == 2 and record.service == "node"
        assert jsonutil.loads(record.fields_json) == {"bytes": 10}
        page = await stub.QueryLogs(
            log_pb2.QueryLogsRequest(execution_id=execution_id, page_size=1), timeout=5
        )
        assert len(page.records) == 1 and page.next_page_token
        rest = await stub.QueryLogs(
            log_pb2.QueryLogsRequest(
                execution_id=execution_id, page_size=1, page_token=page.next_page_token
            ),
            timeout=5,
        )
        assert [r.message for r in rest.records] == ["fetch failed"] and not rest.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryLogs(log_pb2.QueryLogsRequest(level="loud"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        logger.removeHandler(shipper.handler)
        await channel.close()
        await shipper.stop()
        await server.stop()
        await bus.close()


async def test_shipper_drops_and_counts_when_the_queue_is_full() -> None:
    class StuckBus(InProcessBus):
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            await asyncio.Event().wait()

    shipper = LogShipper(StuckBus(), service="node", max_queue=2)
    await shipper.start()
    logger = logging.getLogger("test.logship.full")
    logger.addHandler(shipper.handler)
    token = execution_id_var.set("e1")
    try:
        for i in range(10):
            logger.warning("record %d", i)  # never blocks, whatever the broker does
    finally:
        execution_id_var.reset(token)
        logger.removeHandler(shipper.handler)
    # One is in flight in the stuck publish, two wait in the queue, the rest are dropped.
    await assert_eventually(lambda: shipper.dropped >= 7)
    assert shipper.dropped + shipper.pending <= 10
    await shipper.stop(timeout_s=0.05)
