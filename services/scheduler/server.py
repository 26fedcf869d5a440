"""Wires the scheduler: settings → database, broker, KV → leader election, ticker, gRPC."""

from __future__ import annotations

import asyncio
import logging

from heddle.v1 import scheduler_pb2, scheduler_pb2_grpc

from libs.common.bus import EventBus
from libs.common.db import session_factory
from libs.common.grpcutil import GrpcServer
from libs.common.kv import KV
from libs.common.runtime import run_service
from libs.common.service import RunningService, ServiceStack, cancel_tasks, start_service
from libs.migrations import upgrade
from services.scheduler import models  # noqa: F401  (registers the table)
from services.scheduler.leader import LeaderElector
from services.scheduler.schedules import ScheduleManager
from services.scheduler.servicer import SchedulerServicer
from services.scheduler.settings import SchedulerSettings
from services.scheduler.ticker import Ticker

log = logging.getLogger(__name__)

SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name


class SchedulerServer(RunningService):
    """The running scheduler: its elector and ticker, and the stack that closes the rest."""

    def __init__(
        self,
        stack: ServiceStack,
        grpc_server: GrpcServer,
        elector: LeaderElector,
        ticker: Ticker,
        tasks: list[asyncio.Task[None]],
    ) -> None:
        super().__init__(stack, grpc_server)
        self.elector = elector
        self.ticker = ticker
        self.tasks = tasks

    async def stop_background(self) -> None:
        """Stop ticking and campaigning (the lease is handed back)."""
        await cancel_tasks(self.tasks)
        self.tasks.clear()
        await self.elector.resign()


async def serve(
    settings: SchedulerSettings, *, bus: EventBus | None = None, kv: KV | None = None
) -> SchedulerServer:
    """Start the scheduler; pass bus/kv to share them (embedded mode), else they are built
    from the settings and closed on stop."""

    async def build(stack: ServiceStack) -> SchedulerServer:
        engine = stack.database(settings.database_url)
        await upgrade(engine)
        shared_bus = await stack.bus(settings.broker_url, settings.broker_prefix, bus)
        shared_kv = stack.kv(settings.redis_url, kv)
        sessions = session_factory(engine)
        elector = LeaderElector(
            shared_kv,
            name=settings.leader_lease_name,
            owner=settings.instance_id,
            ttl_s=settings.leader_lease_s,
        )
        ticker = Ticker(
            sessions,
            shared_bus,
            is_leader=lambda: elector.is_leader,
            tick_s=settings.tick_s,
            grace_s=settings.misfire_grace_s,
            batch_size=settings.batch_size,
        )
        servicer = SchedulerServicer(
            ScheduleManager(sessions, shared_bus), settings.default_page_size
        )
        server = await stack.service_server(
            settings,
            "scheduler",
            [SERVICE_NAME],
            lambda s: scheduler_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, s),
        )
        service = SchedulerServer(stack, server, elector, ticker, [])
        # Closed first: ticking and campaigning stop (the lease handed back) before the rest.
        stack.callback(service.stop_background)
        service.tasks.extend(
            [
                asyncio.create_task(elector.run(), name="scheduler-leader"),
                asyncio.create_task(ticker.run(), name="scheduler-ticker"),
            ]
        )
        log.info("scheduler service ready", extra={"instance_id": settings.instance_id})
        return service

    return await start_service("scheduler", build)


def main() -> None:
    run_service("scheduler", SchedulerSettings(), serve)
