"""The `knowledge_bases` and `knowledge_documents` tables (the chunks live in the index)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, utcnow


class KnowledgeBaseRow(Base):
    __tablename__ = "knowledge_bases"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    embedding_model: Mapped[str] = mapped_column(String(200), default="")
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_overlap: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ux_knowledge_bases_tenant_name", "tenant_id", "name", unique=True),)


class KnowledgeDocumentRow(Base):
    __tablename__ = "knowledge_documents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    knowledge_base_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("knowledge_bases.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255), default="")
    file_id: Mapped[str] = mapped_column(String(36), default="")
    # The content: raw text, or an artifact reference (a file's bytes in the artifact store).
    text: Mapped[str | None] = mapped_column(Text, default=None, nullable=True)
    artifact: Mapped[Any] = mapped_column(default=None, nullable=True)
    doc_metadata: Mapped[Any] = mapped_column("metadata", default=None, nullable=True)
    # pending -> ingesting -> ingested | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_knowledge_documents_base", "knowledge_base_id", "created_at"),
        Index("ix_knowledge_documents_status", "status", "updated_at"),
    )
