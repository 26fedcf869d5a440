"""SchedulerService over real gRPC (port 0) on SQLite, with the in-process bus and KV."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from heddle.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

from libs.common import jsonutil
from libs.common.bus import TRIGGERS_EXCHANGE, InProcessBus
from libs.common.errors import from_rpc_error
from libs.common.kv import MemoryKV
from services.scheduler.leader import LeaderElector
from services.scheduler.server import serve
from services.scheduler.settings import SchedulerSettings
from tests.helpers import assert_eventually
from tests.scheduler.support import FireRecorder

UTC = dt.UTC


def stamp(value: dt.datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


@pytest.fixture
async def harness(
    tmp_path: Path,
) -> AsyncIterator[tuple[scheduler_pb2_grpc.SchedulerServiceStub, FireRecorder]]:
    settings = SchedulerSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'scheduler.db'}",
        grpc_port=0,
        tick_s=0.05,
        leader_lease_s=1.0,
    )
    bus = InProcessBus()
    recorder = FireRecorder()
    await bus.subscribe(TRIGGERS_EXCHANGE, ["trigger.#"], recorder.handle)
    server = await serve(settings, bus=bus, kv=MemoryKV())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield scheduler_pb2_grpc.SchedulerServiceStub(channel), recorder
    await channel.close()
    await server.stop()
    await bus.close()


def spec(**overrides: object) -> scheduler_pb2.ScheduleSpec:
    values: dict[str, object] = {
        "workflow_id": "wf-1",
        "cron": "0 9 * * *",
        "timezone": "Europe/Paris",
        "inputs_json": jsonutil.dumps({"k": "v"}),
        "enabled": True,
        "name": "morning",
    }
    values.update(overrides)
    return scheduler_pb2.ScheduleSpec(**values)  # type: ignore[arg-type]


async def test_create_get_list_update_delete(harness) -> None:
    stub, _ = harness
    created = await stub.CreateSchedule(scheduler_pb2.CreateScheduleRequest(spec=spec()), timeout=5)
    assert created.id and created.tenant_id == "default"
    assert created.spec.misfire_policy == "skip" and created.spec.misfire_limit == 10
    next_fire = created.next_fire_at.ToDatetime(tzinfo=UTC)
    assert next_fire > dt.datetime.now(UTC)
    assert next_fire.astimezone(dt.timezone(dt.timedelta(hours=1))).hour in (9, 10)  # CET/CEST

    fetched = await stub.GetSchedule(scheduler_pb2.GetScheduleRequest(id=created.id), timeout=5)
    assert fetched == created

    for i in range(3):
        await stub.CreateSchedule(
            scheduler_pb2.CreateScheduleRequest(spec=spec(workflow_id="wf-2", name=f"s{i}")),
            timeout=5,
        )
    page = await stub.ListSchedules(
        scheduler_pb2.ListSchedulesRequest(
            workflow_id="wf-2", page=common_pb2.PageRequest(page=2, page_size=2)
        ),
        timeout=5,
    )
    assert page.page.total == 3 and len(page.schedules) == 1

    updated = await stub.UpdateSchedule(
        scheduler_pb2.UpdateScheduleRequest(id=created.id, spec=spec(cron="*/5 * * * *")),
        timeout=5,
    )
    assert updated.spec.cron == "*/5 * * * *"
    assert updated.next_fire_at.ToDatetime(tzinfo=UTC) - dt.datetime.now(UTC) <= dt.timedelta(
        minutes=5
    )

    await stub.DeleteSchedule(scheduler_pb2.DeleteScheduleRequest(id=created.id), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetSchedule(scheduler_pb2.GetScheduleRequest(id=created.id), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"timezone": "Nowhere/Land"}, "timezone"),
        ({"misfire_policy": "whenever"}, "misfire_policy"),
        ({"workflow_id": ""}, "workflow_id"),
        (
            {
                "start_at": stamp(dt.datetime(2025, 1, 2, tzinfo=UTC)),
                "end_at": stamp(dt.datetime(2025, 1, 1, tzinfo=UTC)),
            },
            "end_at",
        ),
        ({"inputs_json": b"{not json"}, "inputs_json"),
    ],
)
async def test_validation_errors_name_the_field(harness, overrides, field) -> None:
    stub, _ = harness
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateSchedule(
            scheduler_pb2.CreateScheduleRequest(spec=spec(**overrides)), timeout=5
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(raised.value)
    assert field in error.message
    assert field in [detail["path"] for detail in error.details]


async def test_trigger_now_publishes_a_manual_fire(harness) -> None:
    stub, recorder = harness
    created = await stub.CreateSchedule(scheduler_pb2.CreateScheduleRequest(spec=spec()), timeout=5)
    first = await stub.TriggerSchedule(
        scheduler_pb2.TriggerScheduleRequest(id=created.id), timeout=5
    )
    second = await stub.TriggerSchedule(
        scheduler_pb2.TriggerScheduleRequest(id=created.id), timeout=5
    )
    assert first.dedupe_key != second.dedupe_key
    await assert_eventually(lambda: len(recorder.of(created.id)) == 2)
    fire = recorder.of(created.id)[0]
    assert fire.source == "manual" and fire.workflow_id == "wf-1"
    assert jsonutil.loads(fire.inputs_json) == {"k": "v"}


async def test_a_due_schedule_fires_through_the_running_service(harness) -> None:
    stub, recorder = harness
    created = await stub.CreateSchedule(
        scheduler_pb2.CreateScheduleRequest(spec=spec(cron="* * * * * *", timezone="UTC")),
        timeout=5,
    )
    await assert_eventually(lambda: len(recorder.of(created.id)) >= 1, timeout=5)
    assert recorder.of(created.id)[0].source == "schedule"


async def test_preview(harness) -> None:
    stub, _ = harness
    reply = await stub.PreviewSchedule(
        scheduler_pb2.PreviewScheduleRequest(
            cron="0 0 * * *",
            timezone="Asia/Tokyo",
            count=3,
            after=stamp(dt.datetime(2024, 1, 1, tzinfo=UTC)),
        ),
        timeout=5,
    )
    assert [t.ToDatetime(tzinfo=UTC) for t in reply.fire_times] == [
        dt.datetime(2024, 1, 1, 15, tzinfo=UTC),
        dt.datetime(2024, 1, 2, 15, tzinfo=UTC),
        dt.datetime(2024, 1, 3, 15, tzinfo=UTC),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PreviewSchedule(scheduler_pb2.PreviewScheduleRequest(cron="x"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_graceful_stop_hands_the_lease_back() -> None:
    kv = MemoryKV()
    leader = LeaderElector(kv, name="lease", owner="a", ttl_s=30)
    standby = LeaderElector(kv, name="lease", owner="b", ttl_s=30)
    assert await leader.try_acquire()
    assert not await standby.try_acquire()
    task = asyncio.create_task(leader.run())
    await asyncio.sleep(0)  # let it start campaigning
    assert leader.is_leader
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not leader.is_leader
    assert await standby.try_acquire()
