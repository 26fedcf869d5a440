"""One contract for both artifact stores: the local folder and S3 (a real local S3 server
process, moto's, speaking the S3 protocol over HTTP)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.common.artifacts import (
    S3_PART_BYTES,
    ArtifactMissing,
    ArtifactRef,
    ArtifactSettings,
    ArtifactStore,
    ArtifactTooLarge,
    FileArtifactStore,
    InvalidArtifactKey,
    S3ArtifactStore,
    create_artifact_store,
    is_ref,
    iter_bytes,
    new_key,
    put_bytes,
    read_bytes,
)
from tests.s3_server import S3Server


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ArtifactStore]:
    if request.param == "file":
        made = create_artifact_store(f"file://{tmp_path}")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        made = create_artifact_store(server.settings(f"b-{uuid.uuid4().hex[:12]}", "pre/fix"))
    yield made
    await made.close()


def test_create_artifact_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(create_artifact_store(f"file://{tmp_path}"), FileArtifactStore)
    assert isinstance(create_artifact_store("file://./var/artifacts"), FileArtifactStore)
    s3 = create_artifact_store(ArtifactSettings(url="s3://bucket/some/prefix"))
    assert isinstance(s3, S3ArtifactStore)
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    for bad in ("redis://x", "s3:///nobucket", "file://host/x"):
        with pytest.raises(ValueError, match="artifact URL"):
            create_artifact_store(bad)


def test_the_reference_round_trips_and_secrets_never_print() -> None:
    ref = ArtifactRef("outputs/e1/n1", 12, "ab" * 32, "text/csv")
    carried = ref.to_json()
    assert carried == {
        "$ref": "artifact://outputs/e1/n1",
        "size": 12,
        "sha256": "ab" * 32,
        "content_type": "text/csv",
    }
    assert is_ref(carried) and ArtifactRef.from_json(carried) == ref
    assert not is_ref({"$ref": "#/definitions/x"}) and ArtifactRef.from_json({"a": 1}) is None
    settings = ArtifactSettings(s3_access_key="AKIDSECRET", s3_secret_key="VERYSECRET")  # type: ignore[arg-type]
    assert "VERYSECRET" not in repr(settings) and "AKIDSECRET" not in str(settings.model_dump())


async def test_put_and_read_back(store: ArtifactStore) -> None:
    key = new_key("t")
    data = os.urandom(1000) + b"\x00end"
    ref = await put_bytes(store, key, data, "application/x-test")
    assert ref == ArtifactRef(
        key, len(data), hashlib.sha256(data).hexdigest(), "application/x-test"
    )
    assert await store.exists(key)
    assert await store.size(key) == len(data)
    assert await read_bytes(store, ref) == data
    assert await read_bytes(store, ref.uri) == data  # by artifact:// URI too


async def test_ranges(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 4
    ref = await put_bytes(store, new_key("t"), data)
    assert b"".join([c async for c in store.open_stream(ref, 10, 20)]) == data[10:20]
    assert b"".join([c async for c in store.open_stream(ref, 1000)]) == data[1000:]
    assert b"".join([c async for c in store.open_stream(ref, 0, 1)]) == data[:1]


async def test_a_large_stream_is_written_in_parts_and_hashed(store: ArtifactStore) -> None:
    size = S3_PART_BYTES * 2 + 12345  # a multipart upload on S3
    digest = hashlib.sha256()

    async def chunks() -> AsyncIterator[bytes]:
        block = os.urandom(64 * 1024)
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            digest.update(piece)
            sent += len(piece)
            yield piece

    ref = await store.put_stream(new_key("big"), chunks())
    assert (ref.size, ref.sha256) == (size, digest.hexdigest())
    read = hashlib.sha256()
    total = 0
    async for chunk in store.open_stream(ref):
        read.update(chunk)
        total += len(chunk)
    assert (total, read.hexdigest()) == (size, digest.hexdigest())


async def test_over_max_bytes_nothing_is_stored(store: ArtifactStore) -> None:
    key = new_key("t")
    with pytest.raises(ArtifactTooLarge):
        await store.put_stream(key, iter_bytes(b"x" * 5000, 1000), max_bytes=4096)
    assert not await store.exists(key)


async def test_a_failing_stream_leaves_nothing(store: ArtifactStore) -> None:
    key = new_key("t")

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (S3_PART_BYTES + 1)  # a part already uploaded on S3
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream(key, broken())
    assert not await store.exists(key)


async def test_overwrite_and_delete(store: ArtifactStore) -> None:
    key = new_key("t")
    await put_bytes(store, key, b"one")
    await put_bytes(store, key, b"two!")
    assert await read_bytes(store, key) == b"two!"
    await store.delete(key)
    await store.delete(key)  # idempotent
    assert not await store.exists(key)


async def test_missing_names_the_key(store: ArtifactStore) -> None:
    key = new_key("gone")
    with pytest.raises(ArtifactMissing, match=f"artifact://{key}"):
        await read_bytes(store, key)
    with pytest.raises(ArtifactMissing):
        await store.size(key)
    assert not await store.exists(key)


async def test_unsafe_keys_are_refused(store: ArtifactStore) -> None:
    for bad in ("../etc/passwd", "/abs", "a/../../b", "a//b", ""):
        with pytest.raises(InvalidArtifactKey):
            await put_bytes(store, bad, b"x")
