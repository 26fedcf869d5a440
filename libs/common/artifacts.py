"""The artifact store: large values (uploaded files, big node outputs, snapshots) by reference.

One interface, two backends, chosen by URL (as `create_kv` does for the KV store):

- `file:///abs/path` or `file://./relative` — a folder on the local filesystem (the embedded
  mode: `file://./var/artifacts`);
- `s3://bucket/optional/prefix` — any S3-compatible object store (MinIO, AWS S3), through the
  async client library aiobotocore; endpoint, region and credentials come from settings
  (`ArtifactSettings`), never from the URL, so that no secret ends up in a log line.

Every write is streamed: `put_stream` takes an async iterable of byte chunks, computes the
SHA-256 and the size while writing, and never holds the whole value. A write that fails, or
that passes `max_bytes` (`ArtifactTooLarge`), leaves nothing behind. `open_stream` reads back
a byte range as chunks. A key that is not there raises `ArtifactMissing` (which names it).

A stored value is carried in JSON as a *reference* (the claim check):
`{"$ref": "artifact://<key>", "size": n, "sha256": "<hex>", "content_type": "..."}`;
`ArtifactRef.to_json()` / `ArtifactRef.from_json()` convert, `is_ref()` tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr

REF_SCHEME = "artifact://"
#: In the JSON of a value that holds a reference anywhere (jsonutil writes "/" unescaped):
#: without it, no value inside is a reference and none needs resolving.
REF_MARK = REF_SCHEME.encode()
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: Size of the chunks `open_stream` yields.
CHUNK_BYTES = 256 * 1024
#: Part size of S3 multipart uploads (S3's least is 5 MiB for every part but the last).
S3_PART_BYTES = 8 * 1024 * 1024
_FILE_WRITE_BYTES = 1024 * 1024
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/=]{0,511}$")


class ArtifactError(Exception):
    """Base of the store's errors."""


class ArtifactMissing(ArtifactError):
    """The key is not in the store (deleted, expired, or never written)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"artifact {REF_SCHEME}{key} is missing from the artifact store")
        self.key = key


class ArtifactTooLarge(ArtifactError):
    """A write passed its max_bytes; nothing was stored."""

    def __init__(self, key: str, max_bytes: int) -> None:
        super().__init__(f"artifact {key} is larger than {max_bytes} bytes")
        self.key = key
        self.max_bytes = max_bytes


class InvalidArtifactKey(ArtifactError, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """What a stored value is known by: its key, size, SHA-256 (hex) and content type."""

    key: str
    size: int
    sha256: str
    content_type: str = DEFAULT_CONTENT_TYPE

    @property
    def uri(self) -> str:
        return REF_SCHEME + self.key

    def to_json(self) -> dict[str, Any]:
        return {
            "$ref": self.uri,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
        }

    @classmethod
    def from_json(cls, value: object) -> ArtifactRef | None:
        """The reference in a JSON value, or None when it is not one."""
        if not is_ref(value):
            return None
        assert isinstance(value, dict)
        return cls(
            key=value["$ref"][len(REF_SCHEME) :],
            size=int(value.get("size", 0)),
            sha256=str(value.get("sha256", "")),
            content_type=str(value.get("content_type") or DEFAULT_CONTENT_TYPE),
        )


def is_ref(value: object) -> bool:
    """Whether a JSON value is an artifact reference (`{"$ref": "artifact://...", ...}`)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("$ref"), str)
        and value["$ref"].startswith(REF_SCHEME)
        and "sha256" in value
    )


def check_key(key: str) -> str:
    """A key is a relative path of safe characters, without `..` segments."""
    if not _KEY.match(key) or ".." in key.split("/") or "//" in key:
        raise InvalidArtifactKey(f"invalid artifact key {key!r}")
    return key


def new_key(prefix: str) -> str:
    """A fresh unique key under prefix (`files/<tenant>`, `outputs/<execution>`...)."""
    return f"{prefix.strip('/')}/{uuid.uuid4().hex}"


async def iter_bytes(data: bytes, chunk: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Bytes as the async chunk stream put_stream takes."""
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


@runtime_checkable
class ArtifactStore(Protocol):
    """The store both backends implement (see the module docstring for the semantics)."""

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_bytes: int | None = None,
    ) -> ArtifactRef:
        """Writes the chunks under key (replacing it); ArtifactTooLarge past max_bytes."""
        ...

    def open_stream(
        self, ref: ArtifactRef | str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes [start, end) of the artifact (end None: to its end), as chunks.
        ArtifactMissing when it is not there (raised by the first iteration)."""
        ...

    async def size(self, key: str) -> int:
        """The stored size; ArtifactMissing when it is not there."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Removes the key; nothing happens when it is not there."""
        ...

    async def close(self) -> None: ...


async def put_bytes(
    store: ArtifactStore, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE
) -> ArtifactRef:
    return await store.put_stream(key, iter_bytes(data), content_type=content_type)


async def read_bytes(store: ArtifactStore, ref: ArtifactRef | str) -> bytes:
    """The whole artifact in memory: for small ones only (a referenced value being resolved)."""
    parts = [chunk async for chunk in store.open_stream(ref)]
    return b"".join(parts)


def _key_of(ref: ArtifactRef | str) -> str:
    key = ref.key if isinstance(ref, ArtifactRef) else ref
    if key.startswith(REF_SCHEME):
        key = key[len(REF_SCHEME) :]
    return check_key(key)


class FileArtifactStore:
    """Artifacts as files under a root folder; writes go to a temporary file then are renamed
    into place, so a reader never sees half a file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_bytes: int | None = None,
    ) -> ArtifactRef:
        path = self._path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        digest = hashlib.sha256()
        size = 0
        handle = await asyncio.to_thread(open, partial, "wb")
        # Small chunks (an HTTP body arrives in ~64 KB pieces) are written 1 MiB at a time:
        # one thread hop per MiB, not per piece.
        pending = bytearray()
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ArtifactTooLarge(key, max_bytes)
                digest.update(chunk)
                pending += chunk
                if len(pending) >= _FILE_WRITE_BYTES:
                    await asyncio.to_thread(handle.write, bytes(pending))
                    pending.clear()
            if pending:
                await asyncio.to_thread(handle.write, bytes(pending))
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, partial, path)
        except BaseException:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        return ArtifactRef(key, size, digest.hexdigest(), content_type)

    async def open_stream(
        self, ref: ArtifactRef | str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        key = _key_of(ref)
        try:
            handle = await asyncio.to_thread(open, self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactMissing(key) from None
        try:
            if start:
                handle.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                want = CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining)
                chunk = await asyncio.to_thread(handle.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(self._path(key).stat)).st_size
        except FileNotFoundError:
            raise ArtifactMissing(key) from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._path(key).unlink)

    async def close(self) -> None:
        return None


class ArtifactSettings(BaseModel):
    """Where artifacts go: the URL and, for S3, the endpoint, region and credentials."""

    url: str = "file://./var/artifacts"
    s3_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr = Field(default=SecretStr(""))
    s3_secret_key: SecretStr = Field(default=SecretStr(""))
    s3_create_bucket: bool = True


class S3ArtifactStore:
    """Artifacts as objects of one bucket (under an optional key prefix), with aiobotocore.

    Small values are one PutObject; values larger than one part are a multipart upload,
    aborted on failure (so nothing is left behind). The client is made on first use.
    """

    def __init__(self, bucket: str, prefix: str, settings: ArtifactSettings) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._settings = settings
        self._client: Any = None
        self._exit: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _s3(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session

                stack = contextlib.AsyncExitStack()
                s = self._settings
                client = await stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        endpoint_url=s.s3_endpoint or None,
                        region_name=s.s3_region,
                        aws_access_key_id=s.s3_access_key.get_secret_value() or None,
                        aws_secret_access_key=s.s3_secret_key.get_secret_value() or None,
                        config=AioConfig(
                            s3={"addressing_style": "path"},
                            retries={"max_attempts": 3, "mode": "standard"},
                            request_checksum_calculation="when_required",
                            response_checksum_validation="when_required",
                        ),
                    )
                )
                if s.s3_create_bucket:
                    await _ensure_bucket(client, self.bucket)
                self._exit = stack
                self._client = client
        return self._client

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        max_bytes: int | None = None,
    ) -> ArtifactRef:
        s3 = await self._s3()
        name = self._object(key)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []

        async def flush() -> None:
            nonlocal upload_id
            if upload_id is None:
                created = await s3.create_multipart_upload(
                    Bucket=self.bucket, Key=name, ContentType=content_type
                )
                upload_id = created["UploadId"]
            number = len(parts) + 1
            answer = await s3.upload_part(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(buffer),
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            buffer.clear()

        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ArtifactTooLarge(key, max_bytes)
                digest.update(chunk)
                buffer += chunk
                if len(buffer) >= S3_PART_BYTES:
                    await flush()
            if upload_id is None:
                await s3.put_object(
                    Bucket=self.bucket, Key=name, Body=bytes(buffer), ContentType=content_type
                )
            else:
                if buffer:
                    await flush()
                await s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    await s3.abort_multipart_upload(
                        Bucket=self.bucket, Key=name, UploadId=upload_id
                    )
            raise
        return ArtifactRef(key, size, digest.hexdigest(), content_type)

    async def open_stream(
        self, ref: ArtifactRef | str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        key = _key_of(ref)
        if end is not None and end <= start:
            return
        s3 = await self._s3()
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._object(key)}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = await s3.get_object(**request)
        except s3.exceptions.NoSuchKey:
            raise ArtifactMissing(key) from None
        except Exception as exc:
            if _status(exc) == 416:  # a range starting at the end: nothing to read
                return
            raise
        async with answer["Body"] as body:
            while True:
                chunk = await body.read(CHUNK_BYTES)
                if not chunk:
                    break
                yield chunk

    async def size(self, key: str) -> int:
        s3 = await self._s3()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=self._object(key))
        except Exception as exc:
            if _status(exc) == 404:
                raise ArtifactMissing(key) from None
            raise
        return int(head["ContentLength"])

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except ArtifactMissing:
            return False
        return True

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self._object(key))

    async def close(self) -> None:
        if self._exit is not None:
            await self._exit.aclose()
        self._exit = None
        self._client = None


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


async def _ensure_bucket(client: Any, bucket: str) -> None:
    try:
        await client.head_bucket(Bucket=bucket)
    except Exception as exc:
        if _status(exc) not in (404, 400):
            raise
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            await client.create_bucket(Bucket=bucket)


def create_artifact_store(settings: ArtifactSettings | str) -> ArtifactStore:
    """The store named by settings.url (`file://...` or `s3://bucket/prefix`)."""
    if isinstance(settings, str):
        settings = ArtifactSettings(url=settings)
    parsed = urlparse(settings.url)
    if parsed.scheme == "file":
        path = (parsed.netloc + parsed.path) if parsed.netloc in ("", ".", "..") else None
        if path is None:
            raise ValueError(f"artifact URL {settings.url!r}: file:///abs/path or file://./rel")
        return FileArtifactStore(path or ".")
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"artifact URL {settings.url!r} names no bucket (s3://bucket/...)")
        return S3ArtifactStore(parsed.netloc, parsed.path, settings)
    raise ValueError(f"artifact URL {settings.url!r}: the scheme must be file:// or s3://")


def artifact_settings_of(source: object) -> ArtifactSettings:
    """The ArtifactSettings of a service's settings object (its `artifact_*` fields)."""
    fields: Iterable[str] = ArtifactSettings.model_fields
    values = {
        name: getattr(source, f"artifact_{name}")
        for name in fields
        if hasattr(source, f"artifact_{name}")
    }
    return ArtifactSettings(**values)
