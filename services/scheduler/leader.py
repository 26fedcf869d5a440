"""Leader election over a lease in the KV store: one active scheduler, the others standby.

The leader renews its lease every third of the TTL. It considers itself leader only until
the TTL counted from the start of its last successful renewal, so it steps down before a
standby can take over even when the store is unreachable. A standby polls at the same
pace and takes the lease once it has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from libs.common.kv import KV

log = logging.getLogger(__name__)


class LeaderElector:
    """Acquire and keep a lease; `is_leader` says whether this instance may act now."""

    def __init__(self, kv: KV, *, name: str, owner: str, ttl_s: float) -> None:
        self._kv = kv
        self.name = name
        self.owner = owner
        self.ttl_s = ttl_s
        self._valid_until = 0.0
        self.elected = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    async def try_acquire(self) -> bool:
        """One election round: take or renew the lease; True while leader."""
        started = time.monotonic()
        try:
            if self.is_leader:
                held = await self._kv.renew_lease(self.name, self.owner, self.ttl_s)
            else:
                held = await self._kv.lease(self.name, self.owner, self.ttl_s)
        except Exception:
            log.exception("leader lease round failed", extra={"lease": self.name})
            held = False
        was_leader = self.is_leader
        if held:
            self._valid_until = started + self.ttl_s
            self.elected.set()
            if not was_leader:
                log.info("became scheduler leader", extra={"owner": self.owner})
        else:
            if was_leader:
                log.warning("lost scheduler leadership", extra={"owner": self.owner})
            self._valid_until = 0.0
            self.elected.clear()
        return held

    async def run(self) -> None:
        """Campaign until cancelled; then hand the lease back so a standby takes over now."""
        try:
            while True:
                await self.try_acquire()
                await asyncio.sleep(self.ttl_s / 3)
        finally:
            if self.is_leader:
                self._valid_until = 0.0
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._kv.release_lease(self.name, self.owner))
