"""Uploaded files: the rows (table `files`) and their bytes in the artifact store.

`FileRepository` is what other gateway code (the knowledge bases, the workflow inputs of type
`file`) uses to find a tenant's file: `await files_of(app).get(tenant, file_id)` gives a
`StoredFile` (with its `ArtifactRef`) or None, also for another tenant's id.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select

from libs.common.artifacts import ArtifactRef, ArtifactStore, ArtifactTooLarge, new_key
from libs.common.db import utcnow
from libs.common.errors import HeddleError, InvalidArgument, NotFound, ResourceExhausted
from services.gateway.auth import GatewayDatabase
from services.gateway.models import FileRow

log = logging.getLogger(__name__)


class FileTooLarge(HeddleError):
    """413: the upload passed the tenant's largest file; nothing was stored."""

    code = "payload_too_large"
    http_status = 413

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the file is larger than {max_bytes} bytes", {"max_bytes": max_bytes})
        self.max_bytes = max_bytes


@dataclass(frozen=True)
class StoredFile:
    id: str
    tenant_id: str
    name: str
    content_type: str
    size: int
    sha256: str
    artifact_key: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None

    @property
    def ref(self) -> ArtifactRef:
        return ArtifactRef(self.artifact_key, self.size, self.sha256, self.content_type)

    @classmethod
    def of(cls, row: FileRow) -> StoredFile:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            content_type=row.content_type,
            size=row.size,
            sha256=row.sha256,
            artifact_key=row.artifact_key,
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )


class FileRepository:
    def __init__(self, database: GatewayDatabase, store: ArtifactStore) -> None:
        self.database = database
        self.store = store

    async def used_bytes(self, tenant_id: str) -> int:
        async with self.database.session() as session:
            total = await session.scalar(
                select(func.coalesce(func.sum(FileRow.size), 0)).where(
                    FileRow.tenant_id == tenant_id
                )
            )
        return int(total or 0)

    async def upload(
        self,
        *,
        tenant_id: str,
        name: str,
        content_type: str,
        chunks: AsyncIterable[bytes],
        max_bytes: int,
        quota_bytes: int,
        created_by: str,
        retention_s: float,
    ) -> StoredFile:
        """Streams the chunks to the store, then records the file. Past max_bytes (or the
        tenant's quota) nothing is kept: FileTooLarge / ResourceExhausted."""
        limit = max_bytes
        room: int | None = None
        if quota_bytes:
            room = max(0, quota_bytes - await self.used_bytes(tenant_id))
            limit = min(limit, room)
        file_id = str(uuid.uuid4())
        key = new_key(f"files/{tenant_id or 'default'}")
        try:
            ref = await self.store.put_stream(
                key, chunks, content_type=content_type, max_bytes=limit
            )
        except ArtifactTooLarge:
            if room is not None and room < max_bytes:
                raise ResourceExhausted(
                    f"the tenant's file quota of {quota_bytes} bytes would be exceeded "
                    f"({room} bytes left)"
                ) from None
            raise FileTooLarge(max_bytes) from None
        if ref.size == 0:
            await self.store.delete(key)
            raise InvalidArgument(
                "the file is empty: send its bytes as the body (or a multipart part 'file')",
                [{"loc": ["body"], "msg": "Field required", "type": "missing"}],
            )
        now = utcnow()
        row = FileRow(
            id=file_id,
            tenant_id=tenant_id,
            name=name[:255],
            content_type=content_type[:255],
            size=ref.size,
            sha256=ref.sha256,
            artifact_key=key,
            created_by=created_by[:300],
            created_at=now,
            expires_at=now + dt.timedelta(seconds=retention_s) if retention_s else None,
        )
        try:
            async with self.database.transaction() as session:
                session.add(row)
        except BaseException:
            await self.store.delete(key)
            raise
        return StoredFile.of(row)

    async def get(self, tenant_id: str, file_id: str) -> StoredFile | None:
        """The tenant's file, or None (unknown, another tenant's, or expired)."""
        try:
            uuid.UUID(file_id)
        except ValueError:
            return None
        async with self.database.session() as session:
            row = await session.get(FileRow, file_id)
        if row is None or row.tenant_id != tenant_id:
            return None
        if row.expires_at is not None and row.expires_at <= utcnow():
            return None
        return StoredFile.of(row)

    async def require(self, tenant_id: str, file_id: str) -> StoredFile:
        stored = await self.get(tenant_id, file_id)
        if stored is None:
            raise NotFound(f"file {file_id!r} not found")
        return stored

    async def list(
        self, tenant_id: str, offset: int, limit: int
    ) -> tuple[Sequence[StoredFile], int]:
        where = FileRow.tenant_id == tenant_id
        async with self.database.session() as session:
            total = await session.scalar(select(func.count()).select_from(FileRow).where(where))
            rows = await session.scalars(
                select(FileRow)
                .where(where)
                .order_by(FileRow.created_at.desc(), FileRow.id)
                .offset(offset)
                .limit(limit)
            )
            return [StoredFile.of(row) for row in rows.all()], int(total or 0)

    async def delete(self, tenant_id: str, file_id: str) -> None:
        stored = await self.require(tenant_id, file_id)
        async with self.database.transaction() as session:
            await session.execute(delete(FileRow).where(FileRow.id == stored.id))
        await self.store.delete(stored.artifact_key)

    async def remove_expired(self, limit: int = 500) -> int:
        """The retention loop's step: removes files past their expires_at (rows, then bytes)."""
        now = utcnow()
        async with self.database.session() as session:
            rows = (
                await session.scalars(
                    select(FileRow)
                    .where(FileRow.expires_at.is_not(None), FileRow.expires_at <= now)
                    .limit(limit)
                )
            ).all()
            expired = [(row.id, row.artifact_key) for row in rows]
        if not expired:
            return 0
        async with self.database.transaction() as session:
            await session.execute(delete(FileRow).where(FileRow.id.in_([i for i, _ in expired])))
        for _, key in expired:
            await self.store.delete(key)
        log.info("expired files removed", extra={"count": len(expired)})
        return len(expired)


def files_of(app: Any) -> FileRepository:
    """The gateway's file repository (app.state.files, made on first use)."""
    repository: FileRepository | None = getattr(app.state, "files", None)
    if repository is None:
        repository = FileRepository(app.state.security.db, app.state.artifacts)
        app.state.files = repository
    return repository
