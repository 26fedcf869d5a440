"""Rate-limit tokens taken from the shared bucket (Redis) in chunks and spent in this process.

Each principal's token bucket lives in Redis so that its limit holds across gateway replicas;
asking it once per request was a round trip (a script call, a write and a wake-up) on every
request. A replica takes up to `chunk` tokens at once (`KV.rate_take`) and spends them here, so
it asks once per `chunk` requests of a principal.

What the limit still guarantees: every request spends a token the shared bucket granted, so
the principal is never served more than the bucket allows, except that a token may be spent
up to `ttl_s` after the bucket counted it: over any interval a principal may exceed its
bucket by at most `chunk - 1` requests per replica. Tokens a replica took and did not spend
within `ttl_s` are forfeited (the bucket already counted them): a principal spread thinly over
many replicas can be refused up to `chunk - 1` tokens per replica earlier than by an exact
bucket. The chunk is kept small against the burst (see Security) so that both stay small.
"""

from __future__ import annotations

import time

#: Entries kept before the expired ones are swept (one principal per entry).
_SWEEP_ABOVE = 4096


class RateAllowances:
    """Per principal: tokens left and until when (time.monotonic()) they may be spent."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._held: dict[str, tuple[int, float]] = {}

    def spend(self, key: str) -> bool:
        """Spend one held token of `key`; False when none is held (or they expired)."""
        entry = self._held.get(key)
        if entry is None:
            return False
        left, expires = entry
        if left <= 0 or expires <= time.monotonic():
            del self._held[key]
            return False
        if left == 1:
            del self._held[key]
        else:
            self._held[key] = (left - 1, expires)
        return True

    def add(self, key: str, tokens: int) -> None:
        """Hold `tokens` more for `key` (granted by the shared bucket just now)."""
        if tokens <= 0:
            return
        now = time.monotonic()
        entry = self._held.get(key)
        left = entry[0] if entry is not None and entry[1] > now else 0
        if entry is None and len(self._held) >= _SWEEP_ABOVE:
            self._held = {k: v for k, v in self._held.items() if v[1] > now}
        self._held[key] = (left + tokens, now + self._ttl_s)

    def held(self, key: str) -> int:
        entry = self._held.get(key)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else 0
