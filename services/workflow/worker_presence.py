"""Which replica's workers serve which custom types, shared through the `worker_presence`
table: every replica publishes what its connected workers serve (at once when it changes,
and every `refresh_s`), and reads, for the types it was asked about, which other replicas
have workers for them. A replica that died stops refreshing its rows, which go stale after
three refreshes; one that stops cleanly withdraws them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import utcnow
from libs.common.periodic import periodic
from services.workflow import worker_repository as repo
from services.workflow.workers import TypeKey, WorkerPool

log = logging.getLogger(__name__)

#: A key looked up this recently is kept fresh in the cache.
_WATCH_S = 60.0


class PresenceBoard:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        pool: WorkerPool,
        *,
        replica_id: str,
        address: str,
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._pool = pool
        self.replica_id = replica_id
        self.address = address
        self.refresh_s = refresh_s
        self._clock = clock
        self._remote: dict[TypeKey, list[str]] = {}
        self._watched: dict[TypeKey, float] = {}
        self._turn = 0
        # True once this replica's rows are known to be none: a replica whose workers serve
        # nothing (most, most of the time) then writes nothing each round (a transaction
        # with a read and a commit per second, for no row). Only this replica writes its
        # rows, so they stay none until its workers serve something.
        self._none_published = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # Woken early when the local workers change.
        self._task = periodic(
            "worker-presence", lambda: self.refresh_s, self._refresh_and_relay, wake=self._wake
        )

    def changed(self) -> None:
        """The local workers changed: publish soon (not on the caller's path)."""
        self._wake.set()

    def lookup(self, key: TypeKey) -> str | None:
        """An address of another replica with a worker for `key`, from the cache (None: none
        known yet; the key is watched from now on, so a later call may know)."""
        if key not in self._watched:
            self._wake.set()
        self._watched[key] = self._clock()
        addresses = self._remote.get(key)
        if not addresses:
            return None
        self._turn += 1
        return addresses[self._turn % len(addresses)]

    def fresh_after(self) -> dt.datetime:
        return utcnow() - dt.timedelta(seconds=3 * self.refresh_s + 1.0)

    async def _refresh_and_relay(self) -> None:
        try:
            # The database down: keep what we know (periodic logs it), try again next round.
            await self.refresh()
        finally:
            self._pool.relay_queued()

    async def refresh(self) -> None:
        now = self._clock()
        for key in [k for k, seen in self._watched.items() if now - seen > _WATCH_S]:
            del self._watched[key]
        wanted = set(self._watched) | set(self._pool.queued_keys())
        served = self._pool.served()
        if served or not self._none_published:
            async with self._sessions.begin() as session:
                await repo.publish_presence(
                    session, self.replica_id, self.address, served, utcnow()
                )
            self._none_published = not served
        remote: dict[TypeKey, list[str]] = {}
        if wanted:
            fresh_after = self.fresh_after()
            async with self._sessions() as session:
                for tenant_id in {tenant for tenant, _ in wanted}:
                    for row in await repo.presence(session, tenant_id, fresh_after):
                        key = (row.tenant_id, row.node_type)
                        if key in wanted and row.replica_id != self.replica_id:
                            remote.setdefault(key, []).append(row.address)
        self._remote = {key: sorted(set(addresses)) for key, addresses in remote.items()}

    async def connected_types(self, tenant_id: str) -> set[str]:
        """Custom types of a tenant that some replica's worker serves now."""
        local = {name for (tenant, name) in self._pool.served() if tenant == tenant_id}
        async with self._sessions() as session:
            rows = await repo.presence(session, tenant_id, self.fresh_after())
        return local | {row.node_type for row in rows}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._none_published:
            return
        try:
            async with self._sessions.begin() as session:
                await repo.withdraw_presence(session, self.replica_id)
        except Exception:
            log.warning("could not withdraw worker presence", exc_info=True)
