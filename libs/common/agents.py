"""Registered agents and their conversation sessions (issue #15): the tables and their
database access (async functions taking an AsyncSession, or for append_messages an
AsyncConnection, which the workflow service's batch writes use; the caller owns the
transaction).

Shared by two services, so it lives here: the gateway's /api/v1/agents routes write them, the
workflow service reads them when it dispatches an ``agent``/``llm`` node that names an
``agent_id`` or ``session_id`` and appends the session's turns when the node succeeds
(services/workflow/agent_dispatch.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, utcnow


class AgentRow(Base):
    """One version of an agent definition; every save is a new row (id, version), the highest
    version is the current one. ``status`` of the current version governs the agent."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    #: Everything else of the definition (instructions, model, tools, memory, ...).
    definition: Mapped[dict[str, Any]]
    #: The one-node workflow that POST /agents/{id}/chat runs (made at the first chat).
    chat_workflow_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_by: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_agents_tenant_name", "tenant_id", "name"),)


class AgentSessionRow(Base):
    """A conversation thread with an agent."""

    __tablename__ = "agent_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(36))
    title: Mapped[str] = mapped_column(String(200), default="")
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_agent_sessions_tenant_agent", "tenant_id", "agent_id"),)


class AgentMessageRow(Base):
    """One message of a session, numbered from 1 in the order it was said."""

    __tablename__ = "agent_messages"

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("agent_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    #: Where it came from: the execution and node that said it ("" for a message posted).
    execution_id: Mapped[str] = mapped_column(String(36), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AgentUnavailable(Exception):
    """The node's agent or session cannot be used (unknown, paused, retired); `error_type`
    is the node's error type (``agent_paused``, ``agent_retired``, ``agent_not_found``...)."""

    def __init__(self, message: str, error_type: str = "agent_unavailable") -> None:
        super().__init__(message)
        self.error_type = error_type


# ---- agents -------------------------------------------------------------------------------


async def agent_versions(session: AsyncSession, tenant_id: str, agent_id: str) -> list[AgentRow]:
    """Every version of the agent, newest first (empty: no such agent in this tenant)."""
    rows = await session.scalars(
        select(AgentRow)
        .where(AgentRow.id == agent_id, AgentRow.tenant_id == tenant_id)
        .order_by(AgentRow.version.desc())
    )
    return list(rows)


def latest_agents_query(tenant_id: str) -> Any:
    latest = (
        select(AgentRow.id, func.max(AgentRow.version).label("v"))
        .where(AgentRow.tenant_id == tenant_id)
        .group_by(AgentRow.id)
        .subquery()
    )
    return select(AgentRow).join(
        latest, (latest.c.id == AgentRow.id) & (latest.c.v == AgentRow.version)
    )


async def list_agents(
    session: AsyncSession, tenant_id: str, offset: int, limit: int
) -> tuple[list[AgentRow], int]:
    query = latest_agents_query(tenant_id)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(AgentRow.name, AgentRow.id).offset(offset).limit(limit)
    )
    return list(rows), int(total or 0)


async def delete_agent(session: AsyncSession, tenant_id: str, agent_id: str) -> None:
    ids = select(AgentSessionRow.id).where(
        AgentSessionRow.tenant_id == tenant_id, AgentSessionRow.agent_id == agent_id
    )
    await session.execute(delete(AgentMessageRow).where(AgentMessageRow.session_id.in_(ids)))
    await session.execute(
        delete(AgentSessionRow).where(
            AgentSessionRow.tenant_id == tenant_id, AgentSessionRow.agent_id == agent_id
        )
    )
    await session.execute(
        delete(AgentRow).where(AgentRow.id == agent_id, AgentRow.tenant_id == tenant_id)
    )


async def resolve_agent(
    session: AsyncSession, tenant_id: str, agent_id: str, version: int | None
) -> AgentRow:
    """The version asked for (None: the current one) of an agent that takes work."""
    rows = await agent_versions(session, tenant_id, agent_id)
    if not rows:
        raise AgentUnavailable(f"agent {agent_id!r} not found", "agent_not_found")
    current = rows[0]
    if current.status != "active":
        raise AgentUnavailable(
            f"agent {agent_id!r} is {current.status}: it takes no new work",
            f"agent_{current.status}",
        )
    if version is None:
        return current
    for row in rows:
        if row.version == version:
            return row
    raise AgentUnavailable(f"agent {agent_id!r} has no version {version}", "agent_not_found")


# ---- sessions -----------------------------------------------------------------------------


async def get_session(
    session: AsyncSession, tenant_id: str, session_id: str
) -> AgentSessionRow | None:
    row = await session.get(AgentSessionRow, session_id)
    if row is None or row.tenant_id != tenant_id:
        return None
    return row


async def session_messages(
    session: AsyncSession, session_id: str, limit: int | None = None
) -> list[AgentMessageRow]:
    query = select(AgentMessageRow).where(AgentMessageRow.session_id == session_id)
    if limit is not None:  # the newest `limit`, still in order
        rows = await session.scalars(query.order_by(AgentMessageRow.seq.desc()).limit(limit))
        return list(reversed(list(rows)))
    rows = await session.scalars(query.order_by(AgentMessageRow.seq))
    return list(rows)


async def list_sessions(
    session: AsyncSession, tenant_id: str, agent_id: str, offset: int, limit: int
) -> tuple[Sequence[AgentSessionRow], int]:
    where = (AgentSessionRow.tenant_id == tenant_id, AgentSessionRow.agent_id == agent_id)
    total = await session.scalar(select(func.count()).select_from(AgentSessionRow).where(*where))
    rows = await session.scalars(
        select(AgentSessionRow)
        .where(*where)
        .order_by(AgentSessionRow.updated_at.desc(), AgentSessionRow.id)
        .offset(offset)
        .limit(limit)
    )
    return rows.all(), int(total or 0)


async def delete_session(session: AsyncSession, session_id: str) -> None:
    await session.execute(delete(AgentMessageRow).where(AgentMessageRow.session_id == session_id))
    await session.execute(delete(AgentSessionRow).where(AgentSessionRow.id == session_id))


async def append_messages(
    connection: AsyncConnection,
    session_id: str,
    messages: Sequence[tuple[str, str]],
    execution_id: str = "",
    now: dt.datetime | None = None,
) -> None:
    """Append (role, content) pairs on connection, in its transaction (the workflow service's
    batch that records the node's end, so that whoever sees the end reads the turns too);
    numbering is taken under a row lock on the session, so two concurrent appends do not
    collide. A session gone meanwhile takes nothing."""
    now = now or utcnow()
    count = await connection.scalar(
        select(AgentSessionRow.message_count)
        .where(AgentSessionRow.id == session_id)
        .with_for_update()
    )
    if count is None or not messages:
        return
    await connection.execute(
        insert(AgentMessageRow),
        [
            {
                "session_id": session_id,
                "seq": count + index,
                "role": role,
                "content": content,
                "execution_id": execution_id,
                "created_at": now,
            }
            for index, (role, content) in enumerate(messages, start=1)
        ],
    )
    await connection.execute(
        update(AgentSessionRow)
        .where(AgentSessionRow.id == session_id)
        .values(message_count=count + len(messages), updated_at=now)
    )
