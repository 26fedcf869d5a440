"""One contract for both key-value stores: in-process and the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from libs.common.kv import KV, MemoryKV, RedisKV, create_kv
from tests.helpers import assert_eventually
from tests.infra_fixtures import REDIS_URL

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[KV]:
    store = create_kv("memory://" if request.param == "memory" else REDIS_URL)
    yield store
    await store.close()


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def test_create_kv_picks_the_implementation() -> None:
    assert isinstance(create_kv("memory://"), MemoryKV)
    assert isinstance(create_kv("redis://127.0.0.1:6379/0"), RedisKV)
    with pytest.raises(ValueError, match="HEDDLE_REDIS_URL"):
        create_kv("mysql://x")


async def test_get_set_delete(kv: KV, key: str) -> None:
    assert await kv.get(key) is None
    await kv.set(key, b"\x00value")
    assert await kv.get(key) == b"\x00value"
    assert await kv.delete(key) is True
    assert await kv.delete(key) is False
    assert await kv.get(key) is None


async def test_set_with_ttl_expires(kv: KV, key: str) -> None:
    await kv.set(key, b"v", ttl_s=0.05)
    assert await kv.get(key) == b"v"

    async def gone() -> bool:
        return await kv.get(key) is None

    await assert_eventually(gone, timeout=2)


async def test_lock_is_exclusive_and_only_the_holder_releases(kv: KV, key: str) -> None:
    lock = await kv.acquire_lock(key, ttl_s=5)
    assert lock is not None
    assert await kv.acquire_lock(key, ttl_s=5) is None
    assert await lock.extend(5) is True
    assert await lock.release() is True
    assert await lock.release() is False  # a second release is a no-op
    again = await kv.acquire_lock(key, ttl_s=5)
    assert again is not None
    await again.release()


async def test_expired_lock_cannot_be_released_by_its_old_holder(kv: KV, key: str) -> None:
    stale = await kv.acquire_lock(key, ttl_s=0.05)
    assert stale is not None

    async def taken_by_other() -> bool:
        return await kv.acquire_lock(key, ttl_s=5) is not None

    await assert_eventually(taken_by_other, timeout=2)
    assert await stale.release() is False
    assert await stale.extend(5) is False
    assert await kv.acquire_lock(key, ttl_s=5) is None  # the new holder still has it


async def test_lease_compare_and_set(kv: KV, key: str) -> None:
    assert await kv.lease(key, "a", ttl_s=5) is True
    assert await kv.lease(key, "a", ttl_s=5) is True  # re-entrant for its owner
    assert await kv.lease(key, "b", ttl_s=5) is False
    assert await kv.lease_owner(key) == "a"
    assert await kv.renew_lease(key, "b", ttl_s=5) is False
    assert await kv.renew_lease(key, "a", ttl_s=5) is True
    assert await kv.release_lease(key, "b") is False
    assert await kv.release_lease(key, "a") is True
    assert await kv.lease_owner(key) is None
    assert await kv.lease(key, "b", ttl_s=5) is True
    assert await kv.release_lease(key, "b") is True


async def test_lease_is_taken_over_after_expiry(kv: KV, key: str) -> None:
    assert await kv.lease(key, "a", ttl_s=0.05)

    async def b_takes_over() -> bool:
        return await kv.lease(key, "b", ttl_s=5)

    await assert_eventually(b_takes_over, timeout=2)
    assert await kv.renew_lease(key, "a", ttl_s=5) is False
    await kv.release_lease(key, "b")


async def test_concurrent_lease_has_one_winner(kv: KV, key: str) -> None:
    results = await asyncio.gather(*(kv.lease(key, f"owner{i}", ttl_s=5) for i in range(20)))
    assert sum(results) == 1
    winner = await kv.lease_owner(key)
    assert winner is not None
    await kv.release_lease(key, winner)


async def test_rate_limit_token_bucket(kv: KV, key: str) -> None:
    results = [await kv.rate_limit(key, rate_per_s=10, burst=3) for _ in range(4)]
    assert [allowed for allowed, _ in results] == [True, True, True, False]
    assert all(retry == 0 for _, retry in results[:3])
    retry_after = results[3][1]
    assert 0 < retry_after <= 0.1 + 1e-6

    async def refilled() -> bool:
        allowed, _ = await kv.rate_limit(key, rate_per_s=10, burst=3)
        return allowed

    await assert_eventually(refilled, timeout=2, interval=retry_after)


async def test_rate_take_grants_what_the_bucket_holds(kv: KV, key: str) -> None:
    # A chunk of the same bucket: as many as asked while it holds them, then the rest, then none.
    assert await kv.rate_take(key, rate_per_s=0.01, burst=5, want=3) == (3, 0.0)
    assert (await kv.rate_take(key, rate_per_s=0.01, burst=5, want=3))[0] == 2
    granted, retry_after = await kv.rate_take(key, rate_per_s=0.01, burst=5, want=3)
    assert granted == 0
    assert retry_after > 0
    assert not (await kv.rate_limit(key, rate_per_s=0.01, burst=5))[0]


async def test_rate_limit_keys_are_independent(kv: KV, key: str) -> None:
    assert (await kv.rate_limit(key + "a", rate_per_s=1, burst=1))[0]
    assert not (await kv.rate_limit(key + "a", rate_per_s=1, burst=1))[0]
    assert (await kv.rate_limit(key + "b", rate_per_s=1, burst=1))[0]


async def test_rate_limit_rejects_nonsense(kv: KV, key: str) -> None:
    with pytest.raises(ValueError):
        await kv.rate_limit(key, rate_per_s=0, burst=1)


async def test_delete_prefix_removes_only_that_prefix(kv: KV, key: str) -> None:
    await kv.set(f"{key}/a*", b"1")
    await kv.set(f"{key}/a*/b", b"2", ttl_s=60)
    await kv.set(f"{key}/ab", b"3")  # '*' is literal: not under the prefix
    await kv.set(f"{key}-x", b"4")
    assert await kv.delete_prefix(f"{key}/a*") == 2
    assert await kv.get(f"{key}/a*") is None and await kv.get(f"{key}/a*/b") is None
    assert await kv.get(f"{key}/ab") == b"3" and await kv.get(f"{key}-x") == b"4"
    assert await kv.delete_prefix(f"{key}/none") == 0
    await kv.delete(f"{key}/ab")
    await kv.delete(f"{key}-x")


async def test_incr_counts_atomically_and_keeps_its_first_ttl(kv: KV, key: str) -> None:
    assert await kv.incr(key, 5, ttl_s=60) == 5
    assert await kv.get(key) == b"5"  # the counter reads as its decimal text
    # Concurrent increments lose nothing.
    values = await asyncio.gather(*(kv.incr(key, 2, ttl_s=60) for _ in range(20)))
    assert sorted(values) == list(range(7, 46, 2)) and await kv.incr(key, 0) == 45
    await kv.delete(key)
    # A later increment's TTL does not move the first one: the counter ends with its day.
    day = key + ":day"
    assert await kv.incr(day, 1, ttl_s=1.0) == 1
    assert await kv.incr(day, 1, ttl_s=600) == 2

    async def expired() -> bool:
        return await kv.get(day) is None

    await assert_eventually(expired, timeout=5)
    assert await kv.incr(day) == 1  # a new day: a new counter, no TTL asked
    await kv.delete(day)
