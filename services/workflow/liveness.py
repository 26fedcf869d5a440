"""Fast detection of dead workflow replicas, on PostgreSQL.

Every replica holds one connection of its own open, named (`application_name`) after its
replica id, and registers that name in `workflow_replicas`. When a replica's process dies
(SIGKILL, OOM kill, a crash), its kernel closes the socket and PostgreSQL ends the session
at once. Every `liveness_check_s` each replica looks for registered peers without a session
in this database: such a peer is dead, so its row is removed and its executions are released
(owner NULL), and the recovery scan claims them right away instead of after their leases
lapse (`lease_ttl_s`).

A replica that is merely slow (CPU-starved, stopped by SIGSTOP, in a long GC pause) keeps its
connection, so it is never judged dead this way however long it stalls: only its lease can
expire. A host that vanishes without closing its connections (power loss, a partition) is
caught by the lease as before. The fence is unchanged: a replica judged dead while still
running (its connection broke) has its next write refused, and stops driving the execution.

After its connection is re-established (not the first time), a replica judges nobody for one
lease TTL: after a PostgreSQL restart every session is gone, and peers need a moment to
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import make_url

from libs.common.periodic import periodic

log = logging.getLogger(__name__)

_ACTIVE = ["pending", "running", "paused"]

_REGISTER = """
INSERT INTO workflow_replicas (replica_id, session_name, started_at) VALUES ($1, $2, now())
ON CONFLICT (replica_id) DO UPDATE
SET session_name = EXCLUDED.session_name, started_at = EXCLUDED.started_at
"""

_SESSION_GONE = """
NOT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.application_name = r.session_name AND a.datname = current_database()
)
"""

_DEAD_PEERS = (
    "SELECT r.replica_id FROM workflow_replicas r WHERE r.replica_id <> $1 AND " + _SESSION_GONE
)

# Judged again in the DELETE: a peer that reconnected meanwhile keeps its row and executions.
_FORGET = (
    "DELETE FROM workflow_replicas r WHERE r.replica_id = ANY($1) AND "
    + _SESSION_GONE
    + " RETURNING r.replica_id"
)

_RELEASE = """
UPDATE executions SET owner = NULL, lease_expires_at = NULL
WHERE owner = ANY($1) AND status = ANY($2)
"""


def session_name(replica_id: str) -> str:
    """The application_name of a replica's liveness session (at most 63 bytes, as
    PostgreSQL keeps; a replica id may be longer)."""
    return "heddle-workflow " + hashlib.sha256(replica_id.encode()).hexdigest()[:40]


class ReplicaLiveness:
    """This replica's liveness session, and the watch over its peers' sessions."""

    def __init__(
        self,
        database_url: str,
        replica_id: str,
        *,
        check_s: float,
        settle_s: float,
        on_released: Callable[[list[str]], None],
    ) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self.replica_id = replica_id
        self.session_name = session_name(replica_id)
        self._check_s = check_s
        self._settle_s = settle_s
        self._on_released = on_released
        self._connection: asyncpg.Connection | None = None
        self._judge_from = 0.0
        self._connections = 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = periodic(
            "engine-liveness", lambda: self._check_s, self._check_round, immediately=True
        )

    async def stop(self) -> None:
        """Close the session: peers release whatever this replica still owned (call it
        after the runners have stopped)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    async def _check_round(self) -> None:
        try:
            if self._connection is None or self._connection.is_closed():
                await self._connect()
            elif asyncio.get_running_loop().time() >= self._judge_from:
                await self._check_peers(self._connection)
            self._failing = False
        except Exception:
            # Logged once per outage, not every check_s while the database is away (so the
            # failure is handled here, not left to periodic()).
            if not self._failing:
                log.warning("replica liveness check failed; reconnecting", exc_info=True)
            self._failing = True
            await self._close()

    async def _connect(self) -> None:
        await self._close()
        connection = await asyncpg.connect(
            self._dsn, timeout=10, server_settings={"application_name": self.session_name}
        )
        try:
            # Registered from the session itself: the row never names a session not yet open.
            await connection.execute(_REGISTER, self.replica_id, self.session_name)
        except BaseException:
            connection.terminate()
            raise
        self._connection = connection
        self._connections += 1
        settle = self._settle_s if self._connections > 1 else 0.0
        self._judge_from = asyncio.get_running_loop().time() + settle

    async def _check_peers(self, connection: asyncpg.Connection) -> None:
        dead = [row["replica_id"] for row in await connection.fetch(_DEAD_PEERS, self.replica_id)]
        if not dead:
            return
        async with connection.transaction():
            forgotten = [row["replica_id"] for row in await connection.fetch(_FORGET, dead)]
            if forgotten:
                released = await connection.execute(_RELEASE, forgotten, _ACTIVE)
        if forgotten:
            log.warning(
                "workflow replicas died; their executions are released",
                extra={"replicas": forgotten, "released": released},
            )
            self._on_released(forgotten)

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), 2)
            except Exception:
                connection.terminate()
