"""Audit records are written in batches (services/gateway/audit_buffer.py): every record
reaches the table, in fewer INSERTs than records, and a clean shutdown writes what is held."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from libs.common.kv import MemoryKV
from services.gateway import repository as repo
from services.gateway.audit_buffer import AuditBuffer
from services.gateway.auth import GatewayDatabase, Principal, Security
from services.gateway.models import AuditRow
from services.gateway.settings import GatewaySettings

ALICE = Principal(
    id="key:alice", tenant_id="acme", admin=False, scopes=frozenset({"write"}), kind="api_key"
)


def _security(database_url: str) -> Security:
    settings = GatewaySettings(database_url=database_url, auth_enabled=True)
    return Security(settings, GatewayDatabase(database_url), MemoryKV())


async def _record(security: Security, index: int) -> None:
    await security.record(
        ALICE,
        action="execute",
        object_type="workflow",
        object_id=f"wf_{index}",
        status_code=201 if index % 2 else 404,
        request_id=f"req-{index}",
    )


async def _stored(database_url: str) -> list[AuditRow]:
    db = GatewayDatabase(database_url)
    try:
        async with db.session() as session:
            return list((await session.scalars(select(AuditRow))).all())
    finally:
        await db.close()


async def test_records_arrive_batched_survive_shutdown_and_retry(database_url: str) -> None:
    """One database for the three properties (migrating a fresh one is the slow part)."""
    security = _security(database_url)
    inserts: list[int] = []

    async def counted(records: list[dict[str, Any]]) -> None:
        inserts.append(len(records))
        await security._write_audit(records)

    security.audit = AuditBuffer(counted)
    # Batched: the first record is written at once; the rest arrive during its INSERT.
    await _record(security, 0)
    await asyncio.gather(*(_record(security, i) for i in range(1, 120)))
    page, total = await security.audit_page("acme", 1, 500)  # flushes this gateway's own
    assert total == 120
    assert {row.object_id for row in page} == {f"wf_{i}" for i in range(120)}
    assert sum(inserts) == 120 and len(inserts) < 120
    outcome = {row.request_id: (row.outcome, row.status_code) for row in page}
    assert outcome["req-1"] == ("success", 201) and outcome["req-2"] == ("failed", 404)
    await security.close()

    # A clean shutdown writes what is held (here: all of it, the writer never ran).
    security = _security(database_url)
    for index in range(120, 170):
        await _record(security, index)
    assert security.audit.held == 50
    await security.close()
    stored = {row.request_id: row for row in await _stored(database_url)}
    assert sorted(stored) == sorted(f"req-{i}" for i in range(170))

    # A commit whose outcome was lost with the connection is retried: the records already
    # stored are skipped, with no error that would hold every later record back.
    security = _security(database_url)
    first = stored["req-0"]
    again = {c.key: getattr(first, c.key) for c in AuditRow.__table__.columns}
    fresh = again | {"id": "fresh-id", "request_id": "req-fresh"}
    async with security.db.transaction() as session:
        await repo.insert_audit(session, [again | {"object_id": "again"}, fresh])
    async with security.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(AuditRow)) == 171
        kept = await session.scalar(select(AuditRow.object_id).where(AuditRow.id == first.id))
        assert kept == "wf_0"
    await security.close()
