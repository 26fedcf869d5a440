"""The pure part of API-key verification, shared by the gateway (HTTP callers) and the
workflow service (workers dialling in over gRPC): the key's shape and the keyed hash under
which its secret is stored. Looking the key up is each service's business.

A key is `hk_<12 hex prefix>_<secret>`; the `api_keys` row found by prefix stores
HMAC-SHA-256(pepper, secret). A 256-bit random secret cannot be guessed, so a slow hash would
only cost CPU on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

__all__ = ["API_KEY_PREFIX", "hash_secret", "new_api_key", "parse_api_key", "secret_matches"]

API_KEY_PREFIX = "hk_"
_KEY_PATTERN = re.compile(r"^hk_([0-9a-f]{12})_([A-Za-z0-9_\-]{20,200})$")


def new_api_key() -> tuple[str, str, str]:
    """A fresh key: (the full token shown once, its prefix, its secret part)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{API_KEY_PREFIX}{prefix}_{secret}", prefix, secret


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key; None for anything else."""
    match = _KEY_PATTERN.match(token)
    return (match.group(1), match.group(2)) if match else None


def hash_secret(pepper: str, secret: str) -> str:
    """The stored form of a key's secret."""
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(stored_hash: str, pepper: str, secret: str) -> bool:
    """Whether `secret` is the one stored as `stored_hash` (constant time)."""
    return hmac.compare_digest(stored_hash, hash_secret(pepper, secret))
