"""Key-value store, locks, leases and rate limits: Redis in production, in-process embedded.

`create_kv("memory://")` gives `MemoryKV`, `create_kv("redis://host:6379/0")` gives `RedisKV`.
Both implement the `KV` protocol with the same semantics:

- `get/set/delete` of bytes, with an optional TTL;
- `acquire_lock(name, ttl_s)` returns a token-fenced `Lock` or None; only its holder's token
  releases or extends it;
- `lease(name, owner, ttl_s)` is compare-and-set ownership (execution ownership, scheduler
  leadership): it succeeds when the lease is free or already `owner`'s (and extends it);
  `renew_lease` extends only an owned lease, `release_lease` frees only an owned lease;
- `rate_limit(key, rate_per_s, burst)` is a token bucket, atomic in Redis (one Lua script);
  `rate_take(key, rate_per_s, burst, want)` takes up to `want` tokens of the same bucket at
  once (as many as it holds, at least one when it holds one), for a caller that spends them
  locally: one round trip per chunk instead of one per request;
- `delete_prefix(prefix)` removes every key that starts with prefix (cache invalidation);
- `incr(key, amount, ttl_s)` adds to an integer counter atomically and returns its new value;
  the TTL is set when the counter is created, never moved (a tenant's tokens of the day).
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_EXTEND_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_LEASE = """
local current = redis.call('GET', KEYS[1])
if current == false then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
if current == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""

# Token bucket in one round trip, on the server's clock (clients' clocks may disagree).
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
    tokens = burst
    ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local granted = math.min(tonumber(ARGV[3]), math.floor(tokens))
local retry_after = 0
if granted >= 1 then
    tokens = tokens - granted
else
    granted = 0
    retry_after = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(retry_after)}
"""


# INCRBY, and the TTL only on a counter that has none yet (INCRBY keeps an existing TTL).
_INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class KV(Protocol):
    """What the services need from Redis."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def acquire_lock(self, name: str, ttl_s: float) -> Lock | None: ...

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool: ...

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool: ...

    async def release_lease(self, name: str, owner: str) -> bool: ...

    async def lease_owner(self, name: str) -> str | None: ...

    async def rate_limit(self, key: str, rate_per_s: float, burst: int) -> tuple[bool, float]: ...

    async def rate_take(
        self, key: str, rate_per_s: float, burst: int, want: int
    ) -> tuple[int, float]: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int: ...

    async def close(self) -> None: ...


@dataclass
class Lock:
    """A held lock; the random token fences it against a holder whose TTL ran out."""

    kv: _LockStore
    name: str
    token: str

    async def release(self) -> bool:
        """Release if still held by this token; False when it had expired or was taken."""
        return await self.kv.release_lease(self.name, self.token)

    async def extend(self, ttl_s: float) -> bool:
        """Reset the TTL if still held by this token."""
        return await self.kv.renew_lease(self.name, self.token, ttl_s)


class _LockStore(Protocol):
    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool: ...

    async def release_lease(self, name: str, owner: str) -> bool: ...


def _check_rate(rate_per_s: float, burst: int, want: int = 1) -> None:
    if rate_per_s <= 0 or burst < 1:
        raise ValueError("rate_limit needs rate_per_s > 0 and burst >= 1")
    if want < 1:
        raise ValueError("rate_take needs want >= 1")


class _OneTokenRateLimit:
    """rate_limit as a take of one token (both stores implement rate_take)."""

    async def rate_take(
        self, key: str, rate_per_s: float, burst: int, want: int
    ) -> tuple[int, float]:
        raise NotImplementedError

    async def rate_limit(self, key: str, rate_per_s: float, burst: int) -> tuple[bool, float]:
        granted, retry_after = await self.rate_take(key, rate_per_s, burst, 1)
        return granted > 0, retry_after


class MemoryKV(_OneTokenRateLimit):
    """In-process implementation (embedded mode, one process)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes | str, float | None]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}

    def _live(self, key: str) -> bytes | str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and time.monotonic() >= expires:
            del self._data[key]
            return None
        return value

    def _put(self, key: str, value: bytes | str, ttl_s: float | None) -> None:
        expires = None if ttl_s is None else time.monotonic() + ttl_s
        self._data[key] = (value, expires)

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._put(key, value, ttl_s)

    async def delete(self, key: str) -> bool:
        present = self._live(key) is not None
        self._data.pop(key, None)
        return present

    async def acquire_lock(self, name: str, ttl_s: float) -> Lock | None:
        if self._live(f"lock:{name}") is not None:
            return None
        token = secrets.token_hex(16)
        self._put(f"lock:{name}", token, ttl_s)
        return Lock(self, f"lock:{name}", token)

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        current = self._live(name)
        if current is None or current == owner:
            self._put(name, owner, ttl_s)
            return True
        return False

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        if self._live(name) == owner:
            self._put(name, owner, ttl_s)
            return True
        return False

    async def release_lease(self, name: str, owner: str) -> bool:
        if self._live(name) == owner:
            del self._data[name]
            return True
        return False

    async def lease_owner(self, name: str) -> str | None:
        value = self._live(name)
        return value if isinstance(value, str) else None

    async def rate_take(
        self, key: str, rate_per_s: float, burst: int, want: int
    ) -> tuple[int, float]:
        _check_rate(rate_per_s, burst, want)
        now = time.monotonic()
        tokens, ts = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - ts) * rate_per_s)
        granted = min(want, math.floor(tokens))
        if granted >= 1:
            self._buckets[key] = (tokens - granted, now)
            return granted, 0.0
        self._buckets[key] = (tokens, now)
        return 0, (1 - tokens) / rate_per_s

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        current = self._live(key)
        if current is not None and not isinstance(current, bytes):
            raise ValueError(f"{key!r} holds a lease or lock, not a counter")
        try:
            value = int(current or b"0") + amount
        except ValueError:
            raise ValueError(f"{key!r} does not hold an integer") from None
        entry = self._data.get(key) if current is not None else None
        expires = entry[1] if entry is not None else None
        if expires is None and ttl_s is not None:
            expires = time.monotonic() + ttl_s
        self._data[key] = (str(value).encode(), expires)
        return value

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            del self._data[key]
        return len(doomed)

    async def close(self) -> None:
        return None


class RedisKV(_OneTokenRateLimit):
    """Redis implementation (redis.asyncio); keys are prefixed with `prefix`."""

    def __init__(self, url: str, *, prefix: str = "heddle:") -> None:
        from redis.asyncio import Redis

        self._redis: Any = Redis.from_url(url)
        self._prefix = prefix
        self._release = self._redis.register_script(_RELEASE_IF_OWNER)
        self._extend = self._redis.register_script(_EXTEND_IF_OWNER)
        self._lease = self._redis.register_script(_LEASE)
        self._bucket = self._redis.register_script(_TOKEN_BUCKET)
        self._incr = self._redis.register_script(_INCR)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self._key(key))
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._redis.set(self._key(key), value, px=_ms(ttl_s) if ttl_s is not None else None)

    async def delete(self, key: str) -> bool:
        return bool(await self._redis.delete(self._key(key)))

    async def acquire_lock(self, name: str, ttl_s: float) -> Lock | None:
        token = secrets.token_hex(16)
        acquired = await self._redis.set(self._key(f"lock:{name}"), token, nx=True, px=_ms(ttl_s))
        return Lock(self, f"lock:{name}", token) if acquired else None

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        return bool(await self._lease(keys=[self._key(name)], args=[owner, _ms(ttl_s)]))

    async def renew_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        return bool(await self._extend(keys=[self._key(name)], args=[owner, _ms(ttl_s)]))

    async def release_lease(self, name: str, owner: str) -> bool:
        return bool(await self._release(keys=[self._key(name)], args=[owner]))

    async def lease_owner(self, name: str) -> str | None:
        value = await self._redis.get(self._key(name))
        return value.decode() if value is not None else None

    async def rate_take(
        self, key: str, rate_per_s: float, burst: int, want: int
    ) -> tuple[int, float]:
        _check_rate(rate_per_s, burst, want)
        granted, retry_after = await self._bucket(
            keys=[self._key(f"rate:{key}")], args=[repr(float(rate_per_s)), burst, int(want)]
        )
        return int(granted), float(retry_after)

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        ttl = "" if ttl_s is None else str(_ms(ttl_s))
        return int(await self._incr(keys=[self._key(key)], args=[int(amount), ttl]))

    async def delete_prefix(self, prefix: str) -> int:
        # SCAN, not KEYS: it never blocks the server for long, whatever the key count.
        pattern = _glob_escape(self._key(prefix)) + "*"
        removed = 0
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(await self._redis.unlink(*batch))
                batch = []
        if batch:
            removed += int(await self._redis.unlink(*batch))
        return removed

    async def close(self) -> None:
        await self._redis.aclose()


def _glob_escape(text: str) -> str:
    """A literal prefix for a Redis MATCH pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def create_kv(url: str, *, prefix: str = "heddle:") -> KV:
    """The store for HEDDLE_REDIS_URL: memory:// (in-process) or redis:// / rediss://;
    `prefix` namespaces a Redis store's keys (the result cache has its own)."""
    if url.startswith("memory:"):
        return MemoryKV()
    if url.startswith(("redis:", "rediss:", "unix:")):
        return RedisKV(url, prefix=prefix)
    raise ValueError(f"HEDDLE_REDIS_URL: unsupported scheme in {url!r} (memory:// or redis://)")
