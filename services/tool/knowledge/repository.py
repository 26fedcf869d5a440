"""Knowledge bases and documents in the database; the caller owns the transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common.db import utcnow
from services.tool.knowledge.models import KnowledgeBaseRow, KnowledgeDocumentRow


async def get_base(session: AsyncSession, tenant: str, ref: str) -> KnowledgeBaseRow | None:
    """The tenant's knowledge base by id, or else by name."""
    row = await session.get(KnowledgeBaseRow, ref)
    if row is not None and row.tenant_id == tenant:
        return row
    found = await session.execute(
        select(KnowledgeBaseRow).where(
            KnowledgeBaseRow.tenant_id == tenant, KnowledgeBaseRow.name == ref
        )
    )
    return found.scalar_one_or_none()


async def base_by_name(session: AsyncSession, tenant: str, name: str) -> KnowledgeBaseRow | None:
    found = await session.execute(
        select(KnowledgeBaseRow).where(
            KnowledgeBaseRow.tenant_id == tenant, KnowledgeBaseRow.name == name
        )
    )
    return found.scalar_one_or_none()


async def list_bases(session: AsyncSession, tenant: str) -> Sequence[KnowledgeBaseRow]:
    found = await session.execute(
        select(KnowledgeBaseRow)
        .where(KnowledgeBaseRow.tenant_id == tenant)
        .order_by(KnowledgeBaseRow.created_at, KnowledgeBaseRow.id)
    )
    return found.scalars().all()


async def document_counts(
    session: AsyncSession, base_ids: Sequence[str]
) -> dict[str, dict[str, tuple[int, int]]]:
    """{base id: {status: (documents, chunks)}}."""
    if not base_ids:
        return {}
    found = await session.execute(
        select(
            KnowledgeDocumentRow.knowledge_base_id,
            KnowledgeDocumentRow.status,
            func.count(),
            func.coalesce(func.sum(KnowledgeDocumentRow.chunks), 0),
        )
        .where(KnowledgeDocumentRow.knowledge_base_id.in_(base_ids))
        .group_by(KnowledgeDocumentRow.knowledge_base_id, KnowledgeDocumentRow.status)
    )
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    for base_id, status, documents, chunks in found.all():
        counts.setdefault(base_id, {})[status] = (int(documents), int(chunks))
    return counts


async def delete_base(session: AsyncSession, base_id: str) -> None:
    await session.execute(
        delete(KnowledgeDocumentRow).where(KnowledgeDocumentRow.knowledge_base_id == base_id)
    )
    await session.execute(delete(KnowledgeBaseRow).where(KnowledgeBaseRow.id == base_id))


async def list_documents(session: AsyncSession, base_id: str) -> Sequence[KnowledgeDocumentRow]:
    found = await session.execute(
        select(KnowledgeDocumentRow)
        .where(KnowledgeDocumentRow.knowledge_base_id == base_id)
        .order_by(KnowledgeDocumentRow.created_at, KnowledgeDocumentRow.id)
    )
    return found.scalars().all()


async def get_document(
    session: AsyncSession, base_id: str, document_id: str
) -> KnowledgeDocumentRow | None:
    row = await session.get(KnowledgeDocumentRow, document_id)
    return row if row is not None and row.knowledge_base_id == base_id else None


async def delete_document(session: AsyncSession, document_id: str) -> None:
    await session.execute(
        delete(KnowledgeDocumentRow).where(KnowledgeDocumentRow.id == document_id)
    )


async def claim_pending(
    session: AsyncSession, limit: int, stale_before: dt.datetime
) -> list[KnowledgeDocumentRow]:
    """Mark up to limit pending documents (or ones left ingesting by a crashed replica
    before stale_before) as ingesting, and return them. Each is claimed by one replica:
    the update only takes rows still in the state they were read in."""
    found = await session.execute(
        select(KnowledgeDocumentRow)
        .where(
            (KnowledgeDocumentRow.status == "pending")
            | (
                (KnowledgeDocumentRow.status == "ingesting")
                & (KnowledgeDocumentRow.updated_at < stale_before)
            )
        )
        .order_by(KnowledgeDocumentRow.created_at)
        .limit(limit)
    )
    claimed = []
    for row in found.scalars().all():
        now = utcnow()
        result = await session.execute(
            update(KnowledgeDocumentRow)
            .where(
                KnowledgeDocumentRow.id == row.id,
                KnowledgeDocumentRow.status == row.status,
                KnowledgeDocumentRow.updated_at == row.updated_at,
            )
            .values(status="ingesting", updated_at=now, attempts=row.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            claimed.append(row)
    return claimed


async def finish_document(
    session: AsyncSession, document_id: str, *, status: str, chunks: int, error: str
) -> bool:
    """Record the outcome of an ingestion; False when the document was deleted meanwhile."""
    result = await session.execute(
        update(KnowledgeDocumentRow)
        .where(KnowledgeDocumentRow.id == document_id)
        .values(status=status, chunks=chunks, error=error, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
