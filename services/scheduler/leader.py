"""Leader election over a lease in the KV store: one active scheduler, the others standby.

The leader renews its lease every third of the TTL. It considers itself leader only until
the TTL counted from the start of its last successful renewal, so it steps down before a
standby can take over even when the store is unreachable. A standby polls at the same
pace and takes the lease once it has expired.
"""

from __future__ import annotations

import asyncio
import logging
import time

from libs.common.kv import KV
from libs.common.periodic import run_periodic

log = logging.getLogger(__name__)


class LeaderElector:
    """Acquire and keep a lease; `is_leader` says whether this instance may act now."""

    def __init__(
        self, kv: KV, *, name: str, owner: str, ttl_s: float, release_on_stop: bool = True
    ) -> None:
        self._kv = kv
        self._release_on_stop = release_on_stop
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
        """Campaign until cancelled; then resign (unless release_on_stop is off, which tests
        use to act as a killed process)."""
        try:
            await run_periodic(
                "scheduler-leader", lambda: self.ttl_s / 3, self.try_acquire, immediately=True
            )
        finally:
            if self._release_on_stop:
                await asyncio.shield(self.resign())
            else:
                self._valid_until = 0.0
                self.elected.clear()

    async def resign(self) -> None:
        """Stop acting as leader and hand the lease back, so a standby takes over now."""
        was_leader = self.is_leader
        self._valid_until = 0.0
        self.elected.clear()
        if was_leader:
            try:
                await self._kv.release_lease(self.name, self.owner)
            except Exception:
                log.warning("could not release the leader lease; it will expire", exc_info=True)
