"""Wires the scheduler: settings → database, broker, KV → leader election, ticker, gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from heddle.v1 import scheduler_pb2, scheduler_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.common.bus import EventBus, create_bus
from libs.common.db import create_engine, session_factory
from libs.common.grpcutil import GrpcServer, TlsFiles, start_grpc_server
from libs.common.kv import KV, create_kv
from libs.common.runtime import run_service
from libs.migrations import upgrade
from services.scheduler import models  # noqa: F401  (registers the table)
from services.scheduler.leader import LeaderElector
from services.scheduler.schedules import ScheduleManager
from services.scheduler.servicer import SchedulerServicer
from services.scheduler.settings import SchedulerSettings
from services.scheduler.ticker import Ticker

log = logging.getLogger(__name__)

SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name


@dataclass
class SchedulerServer(GrpcServer):
    """The running server plus its background tasks and the resources it owns."""

    elector: LeaderElector | None = None
    ticker: Ticker | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    engine: AsyncEngine | None = None
    owned_bus: EventBus | None = None
    owned_kv: KV | None = None

    async def stop(self, grace: float = 2.0) -> None:
        await super().stop(grace)
        await self.stop_background()
        if self.owned_bus is not None:
            await self.owned_bus.close()
        if self.owned_kv is not None:
            await self.owned_kv.close()
        if self.engine is not None:
            await self.engine.dispose()

    async def stop_background(self) -> None:
        """Stop ticking and campaigning (the lease is handed back)."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        if self.elector is not None:
            await self.elector.resign()


async def serve(
    settings: SchedulerSettings, *, bus: EventBus | None = None, kv: KV | None = None
) -> SchedulerServer:
    """Start the scheduler; pass bus/kv to share them (embedded mode), else they are built
    from the settings and closed on stop."""
    engine = create_engine(settings.database_url)
    owned_bus = owned_kv = None
    try:
        await upgrade(engine)
        if bus is None:
            bus = owned_bus = create_bus(settings.broker_url, settings.broker_prefix)
        await bus.connect()
        if kv is None:
            kv = owned_kv = create_kv(settings.redis_url)
        sessions = session_factory(engine)
        elector = LeaderElector(
            kv,
            name=settings.leader_lease_name,
            owner=settings.instance_id,
            ttl_s=settings.leader_lease_s,
        )
        ticker = Ticker(
            sessions,
            bus,
            is_leader=lambda: elector.is_leader,
            tick_s=settings.tick_s,
            grace_s=settings.misfire_grace_s,
            batch_size=settings.batch_size,
        )
        servicer = SchedulerServicer(ScheduleManager(sessions, bus), settings.default_page_size)
        server = await start_grpc_server(
            "scheduler",
            [SERVICE_NAME],
            lambda s: scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, s),
            host=settings.bind_host,
            port=settings.port_for("scheduler"),
            service_token=settings.service_token,
            tls=TlsFiles.from_settings(settings),
        )
    except BaseException:
        if owned_bus is not None:
            await owned_bus.close()
        if owned_kv is not None:
            await owned_kv.close()
        await engine.dispose()
        raise
    tasks = [
        asyncio.create_task(elector.run(), name="scheduler-leader"),
        asyncio.create_task(ticker.run(), name="scheduler-ticker"),
    ]
    log.info("scheduler service ready", extra={"instance_id": settings.instance_id})
    return SchedulerServer(
        name=server.name,
        server=server.server,
        port=server.port,
        health=server.health,
        elector=elector,
        ticker=ticker,
        tasks=tasks,
        engine=engine,
        owned_bus=owned_bus,
        owned_kv=owned_kv,
    )


def main() -> None:
    run_service("scheduler", SchedulerSettings(), serve)
