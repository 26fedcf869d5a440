"""The result cache's tiers (libs/common/cache.py) against the real Redis, and a private Redis
at maxmemory with the documented policies: the cache's own instance evicts its least recently
used keys; the main instance (noeviction) refuses cache writes and never evicts a lock or a
rate-limit key."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from libs.cli.topology import free_port
from libs.common import cache as cache_module
from libs.common.cache import CacheScope, DiskTier, MemoryTier, ResultCache, create_result_cache
from libs.common.kv import KV, MemoryKV, create_kv
from libs.common.settings import CommonSettings
from tests.helpers import assert_eventually
from tests.infra_fixtures import REDIS_URL

pytestmark = pytest.mark.integration


def _files(folder: Path) -> int:
    return len(list(folder.iterdir()))


def sample(metric: Any, **labels: str) -> float:
    target = metric.labels(**labels) if labels else metric
    return float(target._value.get())


def test_memory_tier_never_exceeds_its_byte_limit_writing_ten_times_its_size() -> None:
    tier = MemoryTier(max_entries=1000, max_bytes=10_000)
    written = 0
    index = 0
    while written < 100_000:
        value = bytes(100 + (index * 37) % 900)
        tier.set(f"k{index}", value, None)
        written += len(value)
        index += 1
        assert tier.bytes <= 10_000
        assert sum(len(tier.get(k) or b"") for k in tier.lru_order()) == tier.bytes
    assert tier.evictions > 0
    assert tier.bytes > 5_000  # it is used, not emptied
    tier.set("huge", bytes(10_001), None)
    assert tier.get("huge") is None and tier.bytes <= 10_000


def test_memory_tier_evicts_the_least_recently_used() -> None:
    tier = MemoryTier(max_entries=3, max_bytes=1_000)
    for key in ("a", "b", "c"):
        tier.set(key, b"x", None)
    assert tier.get("a") == b"x"  # a is now the most recent: b goes first
    tier.set("d", b"x", None)
    assert tier.lru_order() == ["c", "a", "d"]
    assert tier.get("b") is None
    tier.set("e", b"x", None)
    assert tier.get("c") is None and tier.lru_order() == ["a", "d", "e"]


def test_memory_tier_byte_bound_evicts_in_lru_order() -> None:
    tier = MemoryTier(max_entries=100, max_bytes=300)
    for key in ("a", "b", "c"):
        tier.set(key, bytes(100), None)
    tier.get("a")
    tier.set("d", bytes(150), None)  # 450 bytes: b and then c go (the least recent)
    assert tier.lru_order() == ["a", "d"] and tier.bytes == 250


@pytest.fixture
def scope() -> CacheScope:
    return CacheScope(workflow_id=str(uuid.uuid4()), node_id="summarize")


@pytest.fixture
async def redis_kv() -> AsyncIterator[KV]:
    store = create_kv(REDIS_URL, prefix="")
    yield store
    await store.close()


async def test_metrics_move_hits_misses_evictions_bytes(redis_kv: KV, scope: CacheScope) -> None:
    cache = ResultCache(
        memory=MemoryTier(2, 1_000), shared=redis_kv, prefix=f"test-cache-{uuid.uuid4().hex}:"
    )
    misses = sample(cache_module.CACHE_MISSES)
    memory_hits = sample(cache_module.CACHE_HITS, tier="memory")
    shared_hits = sample(cache_module.CACHE_HITS, tier="shared")
    evictions = sample(cache_module.CACHE_EVICTIONS)

    assert await cache.get(scope, "d1") is None
    assert sample(cache_module.CACHE_MISSES) == misses + 1
    await cache.set(scope, "d1", b"one", ttl_s=30)
    assert sample(cache_module.CACHE_BYTES) == 3
    assert await cache.get(scope, "d1") == b"one"
    assert sample(cache_module.CACHE_HITS, tier="memory") == memory_hits + 1
    await cache.set(scope, "d2", b"two", ttl_s=30)
    await cache.set(scope, "d3", b"three", ttl_s=30)  # evicts d1 from memory (2 entries)
    assert sample(cache_module.CACHE_EVICTIONS) == evictions + 1
    assert sample(cache_module.CACHE_BYTES) == len(b"two") + len(b"three")
    assert await cache.get(scope, "d1") == b"one"  # from Redis, copied up
    assert sample(cache_module.CACHE_HITS, tier="shared") == shared_hits + 1
    assert cache.hits == 2 and cache.misses == 1


async def test_every_shared_entry_has_a_ttl(scope: CacheScope) -> None:
    prefix = f"test-cache-{uuid.uuid4().hex}:"
    shared = create_kv(REDIS_URL, prefix="")
    raw = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        cache = ResultCache(memory=None, shared=shared, default_ttl_s=120, prefix=prefix)
        await cache.set(scope, "no-ttl-given", b"v")
        await cache.set(scope, "ttl-given", b"v", ttl_s=5)
        keys = [key async for key in raw.scan_iter(match=f"{prefix}*")]
        assert len(keys) == 2
        ttls = sorted([await raw.ttl(key) for key in keys])
        assert 0 < ttls[0] <= 5 and 100 < ttls[1] <= 120
    finally:
        await raw.aclose()
        await shared.close()


async def test_invalidation_removes_entries_on_both_tiers(
    redis_kv: KV, scope: CacheScope, tmp_path: Path
) -> None:
    prefix = f"test-cache-{uuid.uuid4().hex}:"
    control = create_kv(REDIS_URL, prefix="")
    raw = redis.asyncio.Redis.from_url(REDIS_URL)
    other_node = CacheScope(scope.workflow_id, "other")
    try:
        cache = ResultCache(
            memory=MemoryTier(100, 10_000),
            shared=redis_kv,
            control=control,
            disk=DiskTier(tmp_path),
            prefix=prefix,
        )
        # Another replica of the workflow service, with its own memory tier.
        replica = ResultCache(
            memory=MemoryTier(100, 10_000), shared=redis_kv, control=control, prefix=prefix
        )
        await cache.set(scope, "d", b"value", ttl_s=60)
        await cache.set(other_node, "d", b"other", ttl_s=60)
        assert await replica.get(scope, "d") == b"value"  # now in its memory tier too
        assert len(replica.memory or []) == 1

        removed = await cache.invalidate(scope.workflow_id, scope.node_id)
        assert removed == 3  # memory, disk and Redis
        assert len(cache.memory or []) == 1  # only the other node's entry
        entry_keys = [k async for k in raw.scan_iter(match=f"{prefix}{scope.workflow_id}/*")]
        assert len(entry_keys) == 1 and b"/other/" in entry_keys[0]
        assert _files(tmp_path) == 1
        assert await cache.get(scope, "d") is None
        assert await replica.get(scope, "d") is None  # its memory copy is unreachable...
        assert len(replica.memory or []) == 0  # ...and dropped once it saw the generation
        assert await replica.get(other_node, "d") == b"other"

        await cache.set(scope, "d", b"new", ttl_s=60)
        assert await replica.get(scope, "d") == b"new"

        await cache.invalidate(scope.workflow_id)  # the whole workflow
        assert await cache.get(other_node, "d") is None
        assert await replica.get(scope, "d") is None
        assert [k async for k in raw.scan_iter(match=f"{prefix}{scope.workflow_id}/*")] == []
    finally:
        await raw.aclose()
        await control.close()


async def test_disk_tier_expires_and_purges(tmp_path: Path, scope: CacheScope) -> None:
    disk = DiskTier(tmp_path)
    cache = ResultCache(memory=None, shared=None, control=MemoryKV(), disk=disk)
    await cache.set(scope, "short", b"s", ttl_s=0.05)
    await cache.set(scope, "long", b"l", ttl_s=60)
    assert await cache.get(scope, "long") == b"l"
    await asyncio.sleep(0.1)
    assert disk.purge_expired() == 1
    assert _files(tmp_path) == 1
    assert await cache.get(scope, "short") is None
    # A new process (a new tier over the same folder) still finds the entry.
    again = ResultCache(memory=None, shared=None, control=cache.control, disk=DiskTier(tmp_path))
    assert await again.get(scope, "long") == b"l"


def test_embedded_mode_has_no_unbounded_shared_tier() -> None:
    cache, opened = create_result_cache(CommonSettings(redis_url="memory://"), MemoryKV())
    assert opened is None and cache.shared is None and cache.memory is not None
    settings = CommonSettings(redis_url=REDIS_URL, cache_url="redis://127.0.0.1:6379/3")
    cache, opened = create_result_cache(settings, MemoryKV())
    assert opened is not None and cache.shared is opened
    assert cache.prefix == settings.cache_prefix


# ---- a Redis at maxmemory ------------------------------------------------------------------


async def _start_redis(policy: str, maxmemory: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = await asyncio.to_thread(
        subprocess.Popen,
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            maxmemory,
            "--maxmemory-policy",
            policy,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"

    async def answers() -> bool:
        assert process.poll() is None, "redis died"
        client = redis.asyncio.Redis.from_url(url)
        try:
            return bool(await client.ping())
        except redis.exceptions.RedisError:
            return False
        finally:
            await client.aclose()

    await assert_eventually(answers, timeout=20, interval=0.05, message="redis not up")
    return process, url


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def test_full_redis_never_evicts_locks_or_rate_limits(scope: CacheScope) -> None:
    """The documented topology: the main Redis (noeviction) holds locks, leases, rate limits
    and the cache generations; the cache's Redis (allkeys-lru) holds the entries. Both at a
    small maxmemory, with ten times that written to the cache."""
    main_process, main_url = await _start_redis("noeviction", "4mb")
    cache_process, cache_url = await _start_redis("allkeys-lru", "4mb")
    main = create_kv(main_url)
    raw_main = redis.asyncio.Redis.from_url(main_url)
    raw_cache = redis.asyncio.Redis.from_url(cache_url)
    try:
        locks = [await main.acquire_lock(f"lock-{i}", ttl_s=600) for i in range(50)]
        assert all(locks)
        for i in range(50):
            assert await main.lease(f"lease-{i}", "replica-1", ttl_s=600)
            allowed, _ = await main.rate_limit(f"tenant-{i}", rate_per_s=0.001, burst=5)
            assert allowed
        protected = sorted(await raw_main.keys("*"))
        settings = CommonSettings(
            redis_url=main_url, cache_url=cache_url, cache_memory_bytes=100_000
        )
        cache, opened = create_result_cache(settings, main)
        assert opened is not None
        value = bytes(20_000)
        for i in range(2_000):  # 40 MB into a 4 MB cache
            await cache.set(scope, f"digest-{i}", value, ttl_s=600)
        info = await raw_cache.info("stats")
        assert int(info["evicted_keys"]) > 0
        assert await cache.get(scope, "digest-1999") == value  # the recent ones stay
        assert await cache.get(scope, "digest-0") is None

        # The main Redis evicted nothing: every lock, lease and bucket is there.
        assert int((await raw_main.info("stats"))["evicted_keys"]) == 0
        assert set(protected) <= set(await raw_main.keys("*"))
        for i, lock in enumerate(locks):
            assert lock is not None and await lock.extend(600), f"lock-{i} lost"
        for i in range(50):
            assert await main.lease_owner(f"lease-{i}") == "replica-1"
            bucket = await raw_main.hget(f"heddle:rate:tenant-{i}", "tokens")
            assert bucket is not None and float(bucket) < 5

        # The cache sharing the main Redis (no HEDDLE_CACHE_URL) at maxmemory: writes are
        # refused (counted, not raised), and still nothing protected is evicted.
        shared_settings = CommonSettings(redis_url=main_url, cache_memory_bytes=0)
        shared_cache, shared_opened = create_result_cache(shared_settings, main)
        refused = sample(cache_module.CACHE_WRITE_ERRORS)
        for i in range(400):  # 8 MB into what is left of 4 MB
            await shared_cache.set(scope, f"digest-{i}", value, ttl_s=600)
        assert sample(cache_module.CACHE_WRITE_ERRORS) > refused
        assert int((await raw_main.info("stats"))["evicted_keys"]) == 0
        for lock in locks:
            assert lock is not None and await lock.extend(600)
        assert set(protected) <= set(await raw_main.keys("*"))
        await opened.close()
        if shared_opened is not None:
            await shared_opened.close()
    finally:
        await raw_main.aclose()
        await raw_cache.aclose()
        await main.close()
        await asyncio.to_thread(_stop, main_process)
        await asyncio.to_thread(_stop, cache_process)
