"""The claim check: large values travel by reference to the artifact store.

A node output (each top-level field of an object output, or the whole value) or an execution
input whose JSON is larger than the threshold (HEDDLE_CLAIM_CHECK_BYTES, 256 KB) is written to
the artifact store and replaced by a reference:

    {"$ref": "artifact://values/<tenant>/<sha256>", "size": n, "sha256": "...",
     "content_type": "application/json" | "text/plain; charset=utf-8", "inline": "json"|"text"}

`inline` says the reference stands for a JSON value (or a string) that a node resolves
transparently before it runs, so no node needs to know whether its input came inline or by
reference. References without `inline` (uploaded files, streamed outputs) stay references:
executors that can stream read them from the store themselves.

Keys are content-addressed per tenant: the same value is stored once, and since the
reference is a function of the content, a node's cache key (a hash of its inputs) is a
function of the content hash. A reference can only be resolved by its own tenant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from libs.common import jsonutil
from libs.common.artifacts import (
    REF_SCHEME,
    ArtifactRef,
    ArtifactStore,
    is_ref,
    put_bytes,
    read_bytes,
)

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


class ForeignReference(ValueError):
    """A reference to another tenant's artifact (refused, named)."""


def tenant_segment(tenant_id: str) -> str:
    return tenant_id or "default"


def allowed_key(key: str, tenant_id: str) -> bool:
    """Whether tenant may read key: only its own values, files and snapshots."""
    tenant = tenant_segment(tenant_id)
    return any(key.startswith(f"{kind}/{tenant}/") for kind in ("values", "files", "snapshots"))


class ClaimCheck:
    def __init__(self, store: ArtifactStore, threshold: int) -> None:
        self.store = store
        self.threshold = threshold

    async def store_value(self, value: Any, tenant_id: str) -> dict[str, Any]:
        """The reference of value, written once (content-addressed) to the store."""
        if isinstance(value, str):
            data, content_type, inline = value.encode(), TEXT, "text"
        else:
            data, content_type, inline = jsonutil.dumps(value), JSON, "json"
        digest = hashlib.sha256(data).hexdigest()
        key = f"values/{tenant_segment(tenant_id)}/{digest}"
        if not await self.store.exists(key):
            await put_bytes(self.store, key, data, content_type)
        return {**ArtifactRef(key, len(data), digest, content_type).to_json(), "inline": inline}

    async def check_out(self, value: Any, tenant_id: str) -> Any:
        """value with what is above the threshold replaced by references: each large
        top-level field of an object, else the whole value when it is large."""
        if value is None or is_ref(value):
            return value
        if len(jsonutil.dumps(value)) <= self.threshold:
            return value
        if isinstance(value, dict):
            checked: dict[str, Any] = {}
            for name, field in value.items():
                if not is_ref(field) and len(jsonutil.dumps(field)) > self.threshold:
                    checked[name] = await self.store_value(field, tenant_id)
                else:
                    checked[name] = field
            if len(jsonutil.dumps(checked)) <= self.threshold:
                return checked
        return await self.store_value(value, tenant_id)

    async def resolve(self, value: Any, tenant_id: str) -> Any:
        """value with every `inline` reference replaced by what it stands for (recursively);
        ArtifactMissing names a reference whose artifact is gone."""
        if isinstance(value, dict):
            if is_ref(value) and value.get("inline") in ("json", "text"):
                ref = ArtifactRef.from_json(value)
                assert ref is not None
                if not allowed_key(ref.key, tenant_id):
                    raise ForeignReference(f"{REF_SCHEME}{ref.key} is not this tenant's")
                data = await read_bytes(self.store, ref)
                return data.decode() if value["inline"] == "text" else jsonutil.loads(data)
            if not _holds_ref(value):
                return value
            return {k: await self.resolve(v, tenant_id) for k, v in value.items()}
        if isinstance(value, list) and _holds_ref(value):
            return [await self.resolve(item, tenant_id) for item in value]
        return value

    async def resolve_context(
        self, context: dict[str, Any], tenant_id: str, wanted: Callable[[str], bool]
    ) -> dict[str, Any]:
        """The context with the references of the entries `wanted` names resolved (lazily:
        what the node does not read is not fetched)."""
        resolved = dict(context)
        for name, value in context.items():
            if name != "system" and wanted(name) and _holds_ref(value):
                resolved[name] = await self.resolve(value, tenant_id)
        return resolved


def _holds_ref(value: Any) -> bool:
    """Cheap test: does the value hold a reference anywhere (a `$ref` key in its JSON)?"""
    if isinstance(value, dict | list):
        return b'"$ref":"artifact://' in jsonutil.dumps(value)
    return False


def wanted_by(params_json: bytes, when: str, sources: set[str]) -> Callable[[str], bool]:
    """The context entries an attempt may read: its live inputs' sources and every name its
    params or its `when` mention."""

    def wanted(name: str) -> bool:
        return name in sources or name.encode() in params_json or name in when

    return wanted
