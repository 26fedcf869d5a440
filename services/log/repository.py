"""Queries on `log_records` and the webhook tables; every function takes an AsyncSession and
the caller owns the transaction."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.common import jsonutil
from libs.common.errors import InvalidArgument
from services.log.models import LogRecordRow, WebhookBindingRow, WebhookDeliveryRow, WebhookRow


@dataclass(frozen=True)
class LogQuery:
    tenant_id: str
    execution_id: str = ""
    node_id: str = ""
    min_level_no: int = 0
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str = ""
    page_size: int = 100
    page_token: str = ""


def encode_page_token(row: LogRecordRow) -> str:
    """An opaque cursor: the (ts, id) of the last row of a page."""
    raw = jsonutil.dumps({"ts": row.ts.isoformat(), "id": row.id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[dt.datetime, int]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = jsonutil.loads(base64.urlsafe_b64decode(padded))
        return dt.datetime.fromisoformat(data["ts"]), int(data["id"])
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidArgument(
            "page_token: not a token this service issued",
            details=[{"path": "page_token", "message": "invalid"}],
        ) from error


async def insert_records(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert a batch of records in one multi-row INSERT."""
    if rows:
        await session.execute(insert(LogRecordRow), list(rows))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def query_records(
    session: AsyncSession, query: LogQuery
) -> tuple[Sequence[LogRecordRow], str]:
    """A page of records in (ts, id) order and the token of the next page ("" at the end)."""
    conditions: list[Any] = [LogRecordRow.tenant_id == query.tenant_id]
    if query.execution_id:
        conditions.append(LogRecordRow.execution_id == query.execution_id)
    if query.node_id:
        conditions.append(LogRecordRow.node_id == query.node_id)
    if query.min_level_no:
        conditions.append(LogRecordRow.level_no >= query.min_level_no)
    if query.since is not None:
        conditions.append(LogRecordRow.ts >= query.since)
    if query.until is not None:
        conditions.append(LogRecordRow.ts < query.until)
    if query.text:
        # ILIKE on PostgreSQL, lower() LIKE lower() elsewhere.
        conditions.append(LogRecordRow.message.ilike(f"%{_escape_like(query.text)}%", escape="\\"))
    if query.page_token:
        after_ts, after_id = decode_page_token(query.page_token)
        conditions.append(
            or_(
                LogRecordRow.ts > after_ts,
                and_(LogRecordRow.ts == after_ts, LogRecordRow.id > after_id),
            )
        )
    rows = list(
        (
            await session.execute(
                select(LogRecordRow)
                .where(*conditions)
                .order_by(LogRecordRow.ts, LogRecordRow.id)
                .limit(query.page_size + 1)
            )
        ).scalars()
    )
    if len(rows) > query.page_size:
        rows = rows[: query.page_size]
        return rows, encode_page_token(rows[-1])
    return rows, ""


async def delete_older_than(session: AsyncSession, cutoff: dt.datetime, limit: int) -> int:
    """Delete up to `limit` records older than cutoff; the number deleted."""
    ids = select(LogRecordRow.id).where(LogRecordRow.ts < cutoff).limit(limit).scalar_subquery()
    result = await session.execute(
        delete(LogRecordRow)
        .where(LogRecordRow.id.in_(ids))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- webhook subscriptions


async def get_webhook(session: AsyncSession, tenant_id: str, webhook_id: str) -> WebhookRow | None:
    """The tenant's subscription, or None (another tenant's is None too)."""
    row = await session.get(WebhookRow, webhook_id)
    return row if row is not None and row.tenant_id == tenant_id else None


async def list_webhooks(
    session: AsyncSession, tenant_id: str, offset: int, limit: int
) -> tuple[Sequence[WebhookRow], int]:
    where = WebhookRow.tenant_id == tenant_id
    total = await session.scalar(select(func.count()).select_from(WebhookRow).where(where))
    rows = (
        await session.execute(
            select(WebhookRow)
            .where(where)
            .order_by(WebhookRow.created_at, WebhookRow.id)
            .offset(offset)
            .limit(limit)
        )
    ).scalars()
    return list(rows), int(total or 0)


async def delete_webhook(session: AsyncSession, webhook_id: str) -> None:
    """Delete a subscription and its delivery log."""
    await session.execute(
        delete(WebhookDeliveryRow).where(WebhookDeliveryRow.subscription_id == webhook_id)
    )
    await session.execute(delete(WebhookRow).where(WebhookRow.id == webhook_id))


async def list_deliveries(
    session: AsyncSession, webhook_id: str, status: str, offset: int, limit: int
) -> tuple[Sequence[WebhookDeliveryRow], int]:
    """A subscription's deliveries, newest first, and how many there are."""
    conditions: list[Any] = [WebhookDeliveryRow.subscription_id == webhook_id]
    if status:
        conditions.append(WebhookDeliveryRow.status == status)
    total = await session.scalar(
        select(func.count()).select_from(WebhookDeliveryRow).where(*conditions)
    )
    rows = (
        await session.execute(
            select(WebhookDeliveryRow)
            .where(*conditions)
            .order_by(WebhookDeliveryRow.created_at.desc(), WebhookDeliveryRow.id)
            .offset(offset)
            .limit(limit)
        )
    ).scalars()
    return list(rows), int(total or 0)


async def active_event_patterns(session: AsyncSession) -> list[list[str]]:
    """The event patterns of every active subscription, all tenants."""
    rows = await session.execute(select(WebhookRow.events).where(WebhookRow.active.is_(True)))
    return [list(events or []) for events in rows.scalars()]


async def ensure_bindings(session: AsyncSession, patterns: Iterable[str], now: dt.datetime) -> None:
    """Record patterns as needed at `now` (insert or refresh), locking their rows until the
    transaction ends: a reconcile that wants to unbind one waits and then sees `now`."""
    values = [{"pattern": pattern, "ensured_at": now} for pattern in sorted(set(patterns))]
    if not values:
        return
    bind = session.get_bind()
    insert_into = postgresql_insert if bind.dialect.name == "postgresql" else sqlite_insert
    statement = insert_into(WebhookBindingRow).values(values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["pattern"], set_={"ensured_at": statement.excluded.ensured_at}
        )
    )


async def lock_bindings(session: AsyncSession) -> Sequence[WebhookBindingRow]:
    """Every recorded binding, locked (FOR UPDATE, in pattern order) until the transaction
    ends; SQLite, one writer at a time, ignores the lock clause."""
    rows = await session.execute(
        select(WebhookBindingRow).order_by(WebhookBindingRow.pattern).with_for_update()
    )
    return list(rows.scalars())


async def forget_binding(session: AsyncSession, pattern: str) -> None:
    await session.execute(delete(WebhookBindingRow).where(WebhookBindingRow.pattern == pattern))
