"""The per-principal rate limit across gateway replicas with tokens leased from Redis in
chunks (services/gateway/rate_allowance.py): one round trip per chunk, and two replicas
together serve no more than the shared bucket holds."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from starlette.exceptions import HTTPException

from libs.common.kv import KV, MemoryKV, create_kv
from services.gateway.auth import GatewayDatabase, Principal, Security
from services.gateway.settings import GatewaySettings
from tests.infra_fixtures import REDIS_URL

pytestmark = pytest.mark.integration


class CountingKV:
    """The shared store, counting the rate-limit round trips of one replica."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self.round_trips = 0

    async def rate_take(
        self, key: str, rate_per_s: float, burst: int, want: int
    ) -> tuple[int, float]:
        self.round_trips += 1
        return await self.kv.rate_take(key, rate_per_s, burst, want)

    async def close(self) -> None:
        await self.kv.close()


def _replica(tmp_path: Path, kv: object) -> Security:
    settings = GatewaySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/unused.db",
        auth_enabled=True,
        rate_limit_per_s=0.001,  # no refill during the test
        rate_limit_burst=40,  # a chunk of 4 (a tenth of the burst)
        rate_limit_lease=16,
    )
    return Security(settings, GatewayDatabase(settings.database_url), kv)  # type: ignore[arg-type]


async def _served(replica: Security, principal: Principal) -> bool:
    try:
        await replica.check_rate(principal)
    except HTTPException as refusal:
        assert refusal.status_code == 429
        assert refusal.headers is not None
        assert int(refusal.headers["Retry-After"]) >= 1
        return False
    return True


async def test_two_replicas_share_one_bucket_in_chunks(tmp_path: Path) -> None:
    principal = Principal(
        id=f"key:{uuid.uuid4().hex}",
        tenant_id="acme",
        admin=False,
        scopes=frozenset(),
        kind="api_key",
    )
    stores = [CountingKV(create_kv(REDIS_URL)), CountingKV(create_kv(REDIS_URL))]
    replicas = [_replica(tmp_path, store) for store in stores]
    try:
        # Alternating replicas: every leased token is spent, so exactly the burst is served.
        outcomes = [await _served(replicas[i % 2], principal) for i in range(50)]
        assert outcomes == [True] * 40 + [False] * 10
        # 20 requests a replica in chunks of 4 (5 round trips), then each refusal asks again.
        assert [store.round_trips for store in stores] == [5 + 5, 5 + 5]
    finally:
        for replica in replicas:
            await replica.close()


async def test_in_process_store_keeps_the_exact_bucket(tmp_path: Path) -> None:
    replica = _replica(tmp_path, MemoryKV())
    principal = Principal(
        id="key:solo", tenant_id="acme", admin=False, scopes=frozenset(), kind="api_key"
    )
    try:
        assert [await _served(replica, principal) for _ in range(41)] == [True] * 40 + [False]
        assert replica._rate_chunk == 1
    finally:
        await replica.close()
