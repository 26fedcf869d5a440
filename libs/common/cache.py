"""The node result cache: a bounded in-process LRU tier in front of a shared tier.

Tiers, looked up in order, each filled from the one below on a hit:

1. `MemoryTier`: this process's least-recently-used entries, bounded in entries and in bytes
   (an entry larger than the byte bound is never kept here);
2. `DiskTier` (optional, the embedded mode): files under one folder, each with its expiry,
   expired files removed as they are met and by `purge_expired()`;
3. the shared tier: a `KV` (Redis in production) under its own key prefix, every entry with a
   TTL (the node's `cache.ttl_s`, else the default) so the cache never grows without bound.

Keys are scoped by (workflow id, node id) so `invalidate(workflow_id, node_id)` can find
them: a cached entry lives under `<workflow>/<workflow generation>/<node>/<node generation>/
<digest>`. Invalidation deletes the scope's entries on every tier this process reaches and
sets a new random generation in the *control* store (the KV that holds locks and rate limits,
never evicted): another process's memory tier then can no longer reach what it kept, because
its next lookup reads the new generation. Generations are random tokens rather than counters
so a lost generation key can never bring an invalidated entry back.

Production runs the shared tier on its own Redis (`HEDDLE_CACHE_URL`) with
`maxmemory-policy allkeys-lru`; the main Redis keeps `noeviction`, so locks, leases and rate
limits are never evicted (docker-compose.yml, deploy/k8s/infrastructure.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge

from libs.common.kv import KV, create_kv
from libs.common.settings import CommonSettings

log = logging.getLogger(__name__)

CACHE_HITS = Counter("heddle_cache_hits_total", "Result cache hits, by tier.", ["tier"])
CACHE_MISSES = Counter("heddle_cache_misses_total", "Result cache lookups that found nothing.")
CACHE_EVICTIONS = Counter(
    "heddle_cache_evictions_total", "Entries the in-process tier evicted to stay in its bounds."
)
CACHE_BYTES = Gauge("heddle_cache_bytes", "Bytes held by the in-process result cache tier.")
CACHE_ENTRIES = Gauge("heddle_cache_entries", "Entries held by the in-process result cache tier.")
CACHE_INVALIDATIONS = Counter(
    "heddle_cache_invalidations_total", "Result cache invalidations (DELETE /api/v1/cache)."
)
CACHE_WRITE_ERRORS = Counter(
    "heddle_cache_write_errors_total",
    "Writes the shared tier refused (e.g. a Redis at maxmemory with noeviction).",
)


@dataclass(frozen=True)
class CacheScope:
    """Which workflow and node an entry belongs to (what invalidation names)."""

    workflow_id: str
    node_id: str


class MemoryTier:
    """Least-recently-used entries within `max_entries` and `max_bytes` (values' sizes)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("cache bounds must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lru_order(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._entries)

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and time.monotonic() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        self._drop(key)
        if len(value) > self.max_bytes or self.max_entries == 0:
            return  # would evict everything else and still not fit
        expires = None if ttl_s is None else time.monotonic() + ttl_s
        self._entries[key] = (value, expires)
        self.bytes += len(value)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
            CACHE_EVICTIONS.inc()
        self._publish()

    def delete_prefix(self, prefix: str) -> int:
        return self.delete_where(lambda key: key.startswith(prefix))

    def delete_where(self, doomed_key: Callable[[str], bool]) -> int:
        doomed = [key for key in self._entries if doomed_key(key)]
        for key in doomed:
            self._drop(key)
        self._publish()
        return len(doomed)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= len(entry[0])

    def _publish(self) -> None:
        CACHE_BYTES.set(self.bytes)
        CACHE_ENTRIES.set(len(self._entries))


_EXPIRY = struct.Struct(">d")  # wall-clock expiry (0: none): files outlive the process


class DiskTier:
    """Entries as files under `folder` (one per key, named by the key's SHA-256); the key is
    stored in the file too, so invalidation by prefix can find them."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / hashlib.sha256(key.encode()).hexdigest()

    @staticmethod
    def _parse(raw: bytes) -> tuple[str, bytes, float]:
        (expires,) = _EXPIRY.unpack_from(raw)
        key_length = int.from_bytes(raw[_EXPIRY.size : _EXPIRY.size + 4], "big")
        start = _EXPIRY.size + 4
        key = raw[start : start + key_length].decode()
        return key, raw[start + key_length :], expires

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            stored_key, value, expires = self._parse(path.read_bytes())
        except (FileNotFoundError, struct.error, UnicodeDecodeError):
            return None
        if stored_key != key:
            return None
        if expires and time.time() >= expires:
            path.unlink(missing_ok=True)
            return None
        return value

    def set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        expires = time.time() + ttl_s if ttl_s is not None else 0.0
        encoded = key.encode()
        path = self._path(key)
        partial = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        partial.write_bytes(
            _EXPIRY.pack(expires) + len(encoded).to_bytes(4, "big") + encoded + value
        )
        os.replace(partial, path)  # readers see the old file or the new one, never half

    def _scan(self) -> list[tuple[Path, str, float]]:
        found = []
        for path in self.folder.iterdir():
            if path.suffix == ".tmp":
                continue
            with contextlib.suppress(OSError, struct.error, UnicodeDecodeError):
                key, _, expires = self._parse(path.read_bytes())
                found.append((path, key, expires))
        return found

    def delete_prefix(self, prefix: str) -> int:
        removed = 0
        for path, key, _ in self._scan():
            if key.startswith(prefix):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def purge_expired(self) -> int:
        """Remove every expired entry; the number removed."""
        now = time.time()
        removed = 0
        for path, _, expires in self._scan():
            if expires and now >= expires:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class ResultCache:
    """The tiers as one cache (see the module docstring)."""

    def __init__(
        self,
        *,
        memory: MemoryTier | None,
        shared: KV | None,
        control: KV | None = None,
        disk: DiskTier | None = None,
        default_ttl_s: float | None = 86400.0,
        prefix: str = "cache:",
        refill_ttl_s: float = 60.0,
    ) -> None:
        self.memory = memory
        self.shared = shared
        self.control = control if control is not None else shared
        self.disk = disk
        self.default_ttl_s = default_ttl_s
        self.prefix = prefix
        # An entry copied up from a lower tier does not know its remaining TTL there: it stays
        # in memory this long at most, so it cannot outlive the shared entry by much more.
        self.refill_ttl_s = refill_ttl_s
        self.hits = 0
        self.misses = 0
        self._seen: dict[str, str] = {}

    async def _generation(self, name: str) -> str:
        if self.control is None:
            return "0"
        value = await self.control.get(f"{self.prefix}gen:{name}")
        generation = value.decode() if value is not None else "0"
        seen = self._seen.get(name)
        if seen is not None and seen != generation and self.memory is not None:
            # Another process invalidated this scope: drop what this memory tier kept of it.
            # (Workflow-level names hold no "/"; their prefix covers every node.)
            self._forget_in_memory(name, seen)
        if len(self._seen) >= 100_000:
            self._seen.clear()
        self._seen[name] = generation
        return generation

    def _forget_in_memory(self, name: str, generation: str) -> None:
        assert self.memory is not None
        workflow_id, _, node_id = name.partition("/")
        workflow = f"{self.prefix}{workflow_id}/"
        if not node_id:
            self.memory.delete_where(lambda key: key.startswith(f"{workflow}{generation}/"))
        else:
            marker = f"/{node_id}/{generation}/"
            self.memory.delete_where(lambda key: key.startswith(workflow) and marker in key)

    async def _scoped(self, scope: CacheScope, digest: str) -> str:
        workflow_gen = await self._generation(scope.workflow_id)
        node_gen = await self._generation(f"{scope.workflow_id}/{scope.node_id}")
        return (
            f"{self.prefix}{scope.workflow_id}/{workflow_gen}/{scope.node_id}/{node_gen}/{digest}"
        )

    async def get(self, scope: CacheScope, digest: str) -> bytes | None:
        """The cached value for digest in scope, or None (counted as a miss)."""
        key = await self._scoped(scope, digest)
        if self.memory is not None and (value := self.memory.get(key)) is not None:
            return self._hit("memory", value)
        if self.disk is not None:
            value = await asyncio.to_thread(self.disk.get, key)
            if value is not None:
                self._fill_memory(key, value, self.refill_ttl_s)
                return self._hit("disk", value)
        if self.shared is not None and (value := await self.shared.get(key)) is not None:
            self._fill_memory(key, value, self.refill_ttl_s)
            return self._hit("shared", value)
        self.misses += 1
        CACHE_MISSES.inc()
        return None

    async def set(
        self, scope: CacheScope, digest: str, value: bytes, ttl_s: float | None = None
    ) -> None:
        """Store value on every tier; `ttl_s` None means the default TTL."""
        ttl = ttl_s if ttl_s is not None else self.default_ttl_s
        key = await self._scoped(scope, digest)
        self._fill_memory(key, value, ttl)
        if self.disk is not None:
            await asyncio.to_thread(self.disk.set, key, value, ttl)
        if self.shared is not None:
            try:
                await self.shared.set(key, value, ttl_s=ttl)
            except Exception as error:  # a full Redis refuses writes: a cache miss later
                CACHE_WRITE_ERRORS.inc()
                log.warning("the shared cache tier refused a write: %s", error)

    async def invalidate(self, workflow_id: str, node_id: str | None = None) -> int:
        """Forget a workflow's (or one of its nodes') entries on every tier; the number of
        entries this process removed."""
        name = workflow_id if node_id is None else f"{workflow_id}/{node_id}"
        old_prefix = (
            f"{self.prefix}{workflow_id}/"
            if node_id is None
            else f"{self.prefix}{workflow_id}/{await self._generation(workflow_id)}/{node_id}/"
        )
        if self.control is not None:
            await self.control.set(f"{self.prefix}gen:{name}", secrets.token_hex(8).encode())
        removed = 0
        if self.memory is not None:
            removed += self.memory.delete_prefix(old_prefix)
        if self.disk is not None:
            removed += await asyncio.to_thread(self.disk.delete_prefix, old_prefix)
        if self.shared is not None:
            removed += await self.shared.delete_prefix(old_prefix)
        CACHE_INVALIDATIONS.inc()
        return removed

    def _fill_memory(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if self.memory is not None:
            self.memory.set(key, value, ttl_s)

    def _hit(self, tier: str, value: bytes) -> bytes:
        self.hits += 1
        CACHE_HITS.labels(tier=tier).inc()
        return value


def create_result_cache(settings: CommonSettings, control: KV) -> tuple[ResultCache, KV | None]:
    """The result cache the settings describe, beside `control` (the KV of HEDDLE_REDIS_URL,
    which keeps the generations); the second item is a store this call opened (the caller
    closes it), or None.

    In the embedded mode (both URLs memory:// or the cache URL unset) there is no shared tier:
    the bounded in-process tier (and the disk tier, if set) is the cache, so it stays bounded.
    """
    in_process = settings.redis_url.startswith("memory:")
    url = settings.cache_url or ("" if in_process else settings.redis_url)
    opened: KV | None = None
    shared: KV | None = None
    if url and not url.startswith("memory:"):
        # prefix="": the cache's keys carry settings.cache_prefix themselves.
        opened = shared = create_kv(url, prefix="")
    cache = ResultCache(
        memory=MemoryTier(settings.cache_memory_entries, settings.cache_memory_bytes),
        shared=shared,
        control=control,
        disk=DiskTier(settings.cache_disk_path) if settings.cache_disk_path else None,
        default_ttl_s=settings.cache_default_ttl_s,
        prefix=settings.cache_prefix,
    )
    return cache, opened
