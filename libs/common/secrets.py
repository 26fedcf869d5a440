"""Secrets at rest (AES-256-GCM) and their redaction from anything stored or published.

`SecretBox` encrypts a tenant's secret with a random 96-bit nonce and binds the ciphertext to
its owner (tenant and name are the associated data): a ciphertext copied onto another row or
tenant does not decrypt. `redact` replaces every occurrence of a secret value inside a JSON-like
value by ``***``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Collection
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from heddle.v1 import node_pb2

from libs.common import jsonutil

REDACTED = "***"
#: Values shorter than this are not redacted: a 1-3 character "secret" occurs everywhere.
MIN_REDACTED_LENGTH = 4
NONCE_BYTES = 12
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# `secrets.NAME` or `secrets["NAME"]` / `secrets['NAME']` inside a template.
_REFERENCE = re.compile(
    r"""\bsecrets\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\])"""
)


class SecretsUnavailable(Exception):
    """No (valid) key is configured, or a ciphertext does not decrypt with it."""


def generate_key() -> str:
    """A new random key, base64-encoded as HEDDLE_SECRETS_KEY expects."""
    return base64.b64encode(os.urandom(32)).decode()


class SecretBox:
    """AES-256-GCM with the key from settings (base64 of 32 bytes)."""

    def __init__(self, key_b64: str) -> None:
        try:
            key = base64.b64decode(key_b64.strip(), validate=True)
        except (binascii.Error, ValueError) as error:
            raise SecretsUnavailable("HEDDLE_SECRETS_KEY is not valid base64") from error
        if len(key) != 32:
            raise SecretsUnavailable("HEDDLE_SECRETS_KEY must be 32 bytes (base64-encoded)")
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(tenant_id: str, name: str) -> bytes:
        return f"heddle-secret\0{tenant_id}\0{name}".encode()

    def encrypt(self, tenant_id: str, name: str, value: str) -> bytes:
        """nonce || ciphertext+tag."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value.encode(), self._aad(tenant_id, name))

    def decrypt(self, tenant_id: str, name: str, blob: bytes) -> str:
        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, sealed, self._aad(tenant_id, name)).decode()
        except InvalidTag as error:
            raise SecretsUnavailable(f"secret {name!r} does not decrypt with this key") from error


def referenced_secrets(value: Any) -> set[str] | None:
    """Names of the secrets the templates in value read; None when none is referenced.

    An empty set means `secrets` is referenced in a way whose names cannot be read off
    (e.g. a computed index): every secret of the tenant is then needed.
    """
    found: set[str] = set()
    mentioned = False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "secrets" in item:
                matches = list(_REFERENCE.finditer(item))
                bare = re.search(r"\bsecrets\b", item) is not None
                mentioned = mentioned or bool(matches) or bare
                found.update(m.group(1) or m.group(2) for m in matches)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found if mentioned else None


def redactable(values: Collection[str]) -> list[str]:
    """The values worth redacting, longest first (so a secret inside another is covered)."""
    return sorted(
        {v for v in values if isinstance(v, str) and len(v) >= MIN_REDACTED_LENGTH},
        key=len,
        reverse=True,
    )


def redact_text(text: str, values: Collection[str]) -> str:
    for secret in values:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any, values: Collection[str]) -> Any:
    """value with every occurrence of a secret (in strings and dict keys) replaced by ***.

    `values` should come from `redactable`. Returns value itself when there is nothing to do.
    """
    if not values:
        return value
    if isinstance(value, str):
        return redact_text(value, values)
    if isinstance(value, dict):
        return {
            (redact_text(k, values) if isinstance(k, str) else k): redact(v, values)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, values) for item in value]
    return value


def redact_outcome(outcome: node_pb2.NodeOutcome, values: Collection[str]) -> node_pb2.NodeOutcome:
    """A copy of a node attempt's outcome with the secret values redacted from its output,
    error, logs and waiting request (the node service and the workflow service both do it)."""
    clean = node_pb2.NodeOutcome()
    clean.CopyFrom(outcome)
    for name in ("output_json", "logs_json", "waiting_json"):
        raw = getattr(outcome, name)
        if raw:
            setattr(clean, name, jsonutil.dumps(redact(jsonutil.loads(raw), values)))
    if outcome.HasField("error"):
        clean.error.message = redact_text(outcome.error.message, values)
        if outcome.error.details_json:
            details = redact(jsonutil.loads(outcome.error.details_json), values)
            clean.error.details_json = jsonutil.dumps(details)
    return clean
