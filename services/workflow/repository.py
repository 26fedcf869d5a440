"""Database access of the workflow service: async functions taking an AsyncSession; the caller
owns the transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import (
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from libs.common.db import utcnow
from services.workflow.models import (
    EventRow,
    ExecutionRequestRow,
    ExecutionRow,
    NodeJournalRow,
    NodeRunRow,
    SecretRow,
    WebhookBindingRow,
    WorkflowRow,
    WorkflowVersionRow,
)
from services.workflow.status import TERMINAL_NODE_STATUSES

ACTIVE_STATUSES = ("pending", "running", "paused")


async def get_workflow(
    session: AsyncSession, tenant_id: str, workflow_id: str
) -> WorkflowRow | None:
    row = await session.get(WorkflowRow, workflow_id)
    if row is None or row.tenant_id != tenant_id or row.deleted_at is not None:
        return None
    return row


async def get_version(
    session: AsyncSession, workflow_id: str, version: int
) -> WorkflowVersionRow | None:
    return await session.get(WorkflowVersionRow, (workflow_id, version))


async def list_workflows(
    session: AsyncSession,
    tenant_id: str,
    offset: int,
    limit: int,
    only_ids: Sequence[str] | None = None,
) -> tuple[Sequence[WorkflowRow], int]:
    """A page of the tenant's workflows (not the hidden ones); with only_ids, of those among
    them."""
    where = and_(
        WorkflowRow.tenant_id == tenant_id,
        WorkflowRow.deleted_at.is_(None),
        WorkflowRow.hidden.is_(False),
    )
    if only_ids is not None:
        where = and_(where, WorkflowRow.id.in_(list(only_ids)))
    total = await session.scalar(select(func.count()).select_from(WorkflowRow).where(where))
    rows = await session.scalars(
        select(WorkflowRow)
        .where(where)
        .order_by(WorkflowRow.created_at.desc(), WorkflowRow.id)
        .offset(offset)
        .limit(limit)
    )
    return rows.all(), int(total or 0)


async def get_execution(
    session: AsyncSession, tenant_id: str, execution_id: str
) -> ExecutionRow | None:
    row = await session.get(ExecutionRow, execution_id)
    if row is None or row.tenant_id != tenant_id:
        return None
    return row


async def find_execution_by_key(
    session: AsyncSession, tenant_id: str, idempotency_key: str
) -> ExecutionRow | None:
    return await session.scalar(
        select(ExecutionRow).where(
            ExecutionRow.tenant_id == tenant_id, ExecutionRow.idempotency_key == idempotency_key
        )
    )


async def list_executions(
    session: AsyncSession,
    tenant_id: str,
    offset: int,
    limit: int,
    workflow_id: str | None = None,
    status: str | None = None,
    only_workflows: Sequence[str] | None = None,
    trigger_prefix: str | None = None,
    forked_from: str | None = None,
    parent_execution_id: str | None = None,
    include_hidden: bool = False,
) -> tuple[Sequence[ExecutionRow], int]:
    """A page of the tenant's executions, newest first. Those of hidden workflows (an
    agent's chat and delegation workflows) only with include_hidden or when the filter names
    them (a workflow, a parent, the forks of an execution): a delegated run is reached from
    its parent's `children`, not in the tenant's listing."""
    conditions = [ExecutionRow.tenant_id == tenant_id]
    if not (include_hidden or workflow_id or parent_execution_id or forked_from):
        conditions.append(
            ~exists().where(WorkflowRow.id == ExecutionRow.workflow_id, WorkflowRow.hidden)
        )
    if parent_execution_id:
        conditions.append(ExecutionRow.parent_execution_id == parent_execution_id)
    if forked_from:
        conditions.append(ExecutionRow.forked_from_execution_id == forked_from)
    if trigger_prefix:
        conditions.append(ExecutionRow.trigger.startswith(trigger_prefix, autoescape=True))
    if only_workflows is not None:
        conditions.append(ExecutionRow.workflow_id.in_(list(only_workflows)))
    if workflow_id:
        conditions.append(ExecutionRow.workflow_id == workflow_id)
    if status:
        conditions.append(ExecutionRow.status == status)
    where = and_(*conditions)
    total = await session.scalar(select(func.count()).select_from(ExecutionRow).where(where))
    rows = await session.scalars(
        select(ExecutionRow)
        .where(where)
        .order_by(ExecutionRow.created_at.desc(), ExecutionRow.id)
        .offset(offset)
        .limit(limit)
    )
    return rows.all(), int(total or 0)


async def child_executions(session: AsyncSession, execution_id: str) -> dict[str, list[str]]:
    """The ids of the executions each node of `execution_id` started (subworkflow, map,
    delegation), oldest first, by node id."""
    rows = await session.execute(
        select(ExecutionRow.parent_node_id, ExecutionRow.id)
        .where(ExecutionRow.parent_execution_id == execution_id)
        .order_by(ExecutionRow.created_at, ExecutionRow.id)
    )
    children: dict[str, list[str]] = {}
    for node_id, child_id in rows:
        children.setdefault(node_id or "", []).append(child_id)
    return children


async def node_runs(session: AsyncSession, execution_id: str) -> Sequence[NodeRunRow]:
    """The execution's node rows, each checkpoint's journal with the entries its journal-only
    writes appended since (node_journal: looked up only when some row holds a journal)."""
    rows = await session.scalars(select(NodeRunRow).where(NodeRunRow.execution_id == execution_id))
    found = rows.all()
    journaled = {
        row.node_id: row
        for row in found
        if isinstance(row.checkpoint, dict) and isinstance(row.checkpoint.get("journal"), list)
    }
    if journaled:
        appended = await session.execute(
            select(NodeJournalRow.node_id, NodeJournalRow.at, NodeJournalRow.entries)
            .where(
                NodeJournalRow.execution_id == execution_id,
                NodeJournalRow.node_id.in_(journaled),
            )
            .order_by(NodeJournalRow.node_id, NodeJournalRow.at)
        )
        extended: dict[str, list[Any]] = {}
        for node_id, at, entries in appended:
            row = journaled[node_id]
            journal = extended.setdefault(node_id, list(row.checkpoint["journal"]))
            if at == len(journal) and isinstance(entries, list):
                journal.extend(entries)
        for node_id, journal in extended.items():
            row = journaled[node_id]
            # As loaded (not a change to flush): the row in the database is still its base.
            set_committed_value(row, "checkpoint", {**row.checkpoint, "journal": journal})
    return found


async def delete_journal_appends(
    connection: AsyncConnection, execution_id: str, node_ids: list[str]
) -> None:
    """Drop what journal-only writes appended to these nodes' journals: their checkpoints are
    being written whole (the generic write path; the PostgreSQL writer folds them itself)."""
    if node_ids:
        await connection.execute(
            delete(NodeJournalRow).where(
                NodeJournalRow.execution_id == execution_id, NodeJournalRow.node_id.in_(node_ids)
            )
        )


async def insert_node_runs(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(_NODE_RUNS), rows)


_NODE_RUNS = cast(Table, NodeRunRow.__table__)
_EVENTS = cast(Table, EventRow.__table__)
_EXECUTIONS = cast(Table, ExecutionRow.__table__)


async def update_node_runs(connection: AsyncConnection, changes: Iterable[dict[str, Any]]) -> None:
    """Bulk UPDATE by primary key (Core executemany: the ORM's bulk path costs several times
    more CPU on the engine's hot path). Each dict has execution_id, node_id and the changed
    columns; dicts are grouped by the set of columns they change."""
    by_shape: dict[frozenset[str], list[dict[str, Any]]] = {}
    for change in changes:
        by_shape.setdefault(frozenset(change), []).append(change)
    for shape, group in by_shape.items():
        columns = sorted(shape - {"execution_id", "node_id"})
        statement = (
            update(_NODE_RUNS)
            .where(
                _NODE_RUNS.c.execution_id == bindparam("k_execution_id"),
                _NODE_RUNS.c.node_id == bindparam("k_node_id"),
            )
            .values({column: bindparam(f"v_{column}") for column in columns})
        )
        await connection.execute(
            statement,
            [
                {
                    "k_execution_id": change["execution_id"],
                    "k_node_id": change["node_id"],
                    **{f"v_{column}": change[column] for column in columns},
                }
                for change in group
            ],
        )


async def insert_event_rows(connection: AsyncConnection, events: list[dict[str, Any]]) -> None:
    if events:
        await connection.execute(insert(_EVENTS), events)


async def fence_execution(
    connection: AsyncConnection, execution_id: str, owner: str, values: dict[str, Any]
) -> bool:
    """Update an execution only while owner holds it: the fence against a replica that lost
    its lease and does not know it yet."""
    result = await connection.execute(
        update(_EXECUTIONS)
        .where(_EXECUTIONS.c.id == execution_id, _EXECUTIONS.c.owner == owner)
        .values(**values)
    )
    return bool(result.rowcount)


async def events_after(
    session: AsyncSession, execution_id: str, after_seq: int, limit: int = 1000
) -> Sequence[EventRow]:
    rows = await session.scalars(
        select(EventRow)
        .where(EventRow.execution_id == execution_id, EventRow.seq > after_seq)
        .order_by(EventRow.seq)
        .limit(limit)
    )
    return rows.all()


async def unpublished_events(
    session: AsyncSession, limit: int, older_than: dt.datetime | None = None
) -> Sequence[EventRow]:
    query = select(EventRow).where(EventRow.published.is_(False))
    if older_than is not None:
        query = query.where(EventRow.ts < older_than)
    rows = await session.scalars(
        query.order_by(EventRow.ts, EventRow.execution_id, EventRow.seq).limit(limit)
    )
    return rows.all()


async def trace_parents(session: AsyncSession, execution_ids: Iterable[str]) -> dict[str, str]:
    """The trace root (traceparent) of each execution named."""
    rows = await session.execute(
        select(ExecutionRow.id, ExecutionRow.trace_parent).where(
            ExecutionRow.id.in_(set(execution_ids))
        )
    )
    return {execution_id: trace_parent for execution_id, trace_parent in rows.all()}


# PostgreSQL: every execution's range of one relay batch in one statement.
_MARK_RANGES = text(
    "UPDATE execution_events AS e SET published = true"
    " FROM unnest(CAST(:ids AS varchar[]), CAST(:lows AS integer[]),"
    " CAST(:highs AS integer[])) AS k(execution_id, low, high)"
    " WHERE e.execution_id = k.execution_id AND e.seq BETWEEN k.low AND k.high"
    " AND NOT e.published"
)


async def mark_published(connection: AsyncConnection, keys: list[tuple[str, int]]) -> None:
    """Flag events as relayed, by each execution's range of sequence numbers (what one relay
    batch holds of an execution is contiguous or nearly so). On PostgreSQL the contiguous
    ranges of every execution are one statement (the relay marks a few executions' events
    every half second); a range with gaps, and SQLite, take a statement per execution."""
    by_execution: dict[str, list[int]] = {}
    for execution_id, seq in keys:
        by_execution.setdefault(execution_id, []).append(seq)
    events = _EVENTS
    ranges: tuple[list[str], list[int], list[int]] = ([], [], [])
    postgres = connection.dialect.name == "postgresql"
    # In the order of the primary key, so that two relays marking the same events (the
    # replicas' sweeps of a backlog) take their row locks in one order, not into a deadlock.
    for execution_id, seqs in sorted(by_execution.items()):
        low, high = min(seqs), max(seqs)
        contiguous = len(set(seqs)) == high - low + 1
        if postgres and contiguous:
            ranges[0].append(execution_id)
            ranges[1].append(low)
            ranges[2].append(high)
            continue
        condition = events.c.seq.between(low, high) if contiguous else events.c.seq.in_(seqs)
        await connection.execute(
            update(events)
            .where(events.c.execution_id == execution_id, condition)
            .values(published=True)
        )
    if ranges[0]:
        await connection.execute(
            _MARK_RANGES, {"ids": ranges[0], "lows": ranges[1], "highs": ranges[2]}
        )


async def claim_execution(
    session: AsyncSession, execution_id: str, owner: str, lease_until: dt.datetime
) -> bool:
    """Take an execution whose lease is free or expired (compare-and-set)."""
    now = utcnow()
    result = await session.execute(
        update(ExecutionRow)
        .where(
            ExecutionRow.id == execution_id,
            ExecutionRow.status.in_(ACTIVE_STATUSES),
            or_(
                ExecutionRow.owner.is_(None),
                ExecutionRow.owner == owner,
                ExecutionRow.lease_expires_at < now,
            ),
        )
        .values(owner=owner, lease_expires_at=lease_until)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def orphaned_executions(session: AsyncSession, limit: int = 100) -> Sequence[str]:
    now = utcnow()
    rows = await session.scalars(
        select(ExecutionRow.id)
        .where(
            ExecutionRow.status.in_(ACTIVE_STATUSES),
            or_(ExecutionRow.owner.is_(None), ExecutionRow.lease_expires_at < now),
        )
        .order_by(ExecutionRow.created_at)
        .limit(limit)
    )
    return rows.all()


async def renew_leases(
    session: AsyncSession, owner: str, execution_ids: list[str], lease_until: dt.datetime
) -> set[str]:
    """Extend the leases this owner still holds; returns the ids it still owns."""
    if not execution_ids:
        return set()
    await session.execute(
        update(ExecutionRow)
        .where(ExecutionRow.id.in_(execution_ids), ExecutionRow.owner == owner)
        .values(lease_expires_at=lease_until)
    )
    held = await session.scalars(
        select(ExecutionRow.id).where(
            ExecutionRow.id.in_(execution_ids), ExecutionRow.owner == owner
        )
    )
    return set(held.all())


# ---- tenant quotas ------------------------------------------------------------------------


async def count_active_executions(session: AsyncSession, tenant_id: str) -> int:
    """Top-level executions of the tenant that are pending, running or paused."""
    total = await session.scalar(
        select(func.count())
        .select_from(ExecutionRow)
        .where(
            ExecutionRow.tenant_id == tenant_id,
            ExecutionRow.status.in_(ACTIVE_STATUSES),
            ExecutionRow.parent_execution_id.is_(None),
        )
    )
    return int(total or 0)


async def count_workflows(session: AsyncSession, tenant_id: str) -> int:
    total = await session.scalar(
        select(func.count())
        .select_from(WorkflowRow)
        .where(
            WorkflowRow.tenant_id == tenant_id,
            WorkflowRow.deleted_at.is_(None),
            WorkflowRow.hidden.is_(False),  # the platform's own do not count to the quota
        )
    )
    return int(total or 0)


# ---- secrets ------------------------------------------------------------------------------


async def get_secret(session: AsyncSession, tenant_id: str, name: str) -> SecretRow | None:
    return await session.get(SecretRow, (tenant_id, name))


async def list_secrets(session: AsyncSession, tenant_id: str) -> Sequence[SecretRow]:
    rows = await session.scalars(
        select(SecretRow).where(SecretRow.tenant_id == tenant_id).order_by(SecretRow.name)
    )
    return rows.all()


async def secrets_named(
    session: AsyncSession, tenant_id: str, names: Iterable[str] | None
) -> Sequence[SecretRow]:
    """The tenant's secrets with these names (every one of them when names is None)."""
    query = select(SecretRow).where(SecretRow.tenant_id == tenant_id)
    if names is not None:
        query = query.where(SecretRow.name.in_(list(names)))
    return (await session.scalars(query)).all()


async def bind_webhooks(
    session: AsyncSession, tenant_id: str, workflow_id: str, names: list[str]
) -> None:
    """Make names the webhook triggers of a workflow (replacing its previous ones)."""
    await session.execute(
        delete(WebhookBindingRow).where(WebhookBindingRow.workflow_id == workflow_id)
    )
    for name in names:
        session.add(WebhookBindingRow(tenant_id=tenant_id, name=name, workflow_id=workflow_id))


async def webhook_workflows(session: AsyncSession, tenant_id: str, name: str) -> list[str]:
    rows = await session.scalars(
        select(WebhookBindingRow.workflow_id)
        .where(WebhookBindingRow.tenant_id == tenant_id, WebhookBindingRow.name == name)
        .order_by(WebhookBindingRow.workflow_id)
    )
    return list(rows.all())


async def pending_requests(session: AsyncSession, owner: str) -> Sequence[ExecutionRequestRow]:
    rows = await session.scalars(
        select(ExecutionRequestRow)
        .join(ExecutionRow, ExecutionRow.id == ExecutionRequestRow.execution_id)
        .where(ExecutionRow.owner == owner, ExecutionRequestRow.done.is_(False))
        .order_by(ExecutionRequestRow.id)
    )
    return rows.all()


async def answer_request(
    session: AsyncSession, request_id: int, error: dict[str, Any] | None
) -> None:
    await session.execute(
        update(ExecutionRequestRow)
        .where(ExecutionRequestRow.id == request_id)
        .values(done=True, error=error)
    )


async def delete_request(session: AsyncSession, request_id: int) -> None:
    await session.execute(delete(ExecutionRequestRow).where(ExecutionRequestRow.id == request_id))


# ---- the poison-execution guard -----------------------------------------------------------


async def record_crash(connection: AsyncConnection, execution_id: str, owner: str) -> int | None:
    """Count a crash of an execution's runner while owner holds it; returns the new count,
    or None when owner no longer holds it (then the crash is someone else's business)."""
    result = await connection.execute(
        update(_EXECUTIONS)
        .where(_EXECUTIONS.c.id == execution_id, _EXECUTIONS.c.owner == owner)
        .values(crashes=_EXECUTIONS.c.crashes + 1)
    )
    if not result.rowcount:
        return None
    crashes = await connection.scalar(
        select(_EXECUTIONS.c.crashes).where(_EXECUTIONS.c.id == execution_id)
    )
    return int(crashes or 0)


async def release_execution(connection: AsyncConnection, execution_id: str, owner: str) -> None:
    """Give up ownership at once (the next recovery scan of any replica claims it)."""
    await connection.execute(
        update(_EXECUTIONS)
        .where(_EXECUTIONS.c.id == execution_id, _EXECUTIONS.c.owner == owner)
        .values(owner=None, lease_expires_at=None)
    )


async def fail_execution(
    connection: AsyncConnection,
    execution_id: str,
    owner: str,
    error: dict[str, Any],
    now: dt.datetime,
) -> tuple[dict[str, Any], str] | None:
    """End an execution as failed without its runner (whose state cannot be trusted): its
    unfinished nodes are cancelled and an `execution.failed` event is stored. Fenced on
    owner; returns the event row and the execution's trace parent, or None when owner no
    longer holds the execution."""
    row = (
        await connection.execute(
            select(
                _EXECUTIONS.c.last_seq,
                _EXECUTIONS.c.trace_id,
                _EXECUTIONS.c.tenant_id,
                _EXECUTIONS.c.workflow_id,
                _EXECUTIONS.c.trace_parent,
            ).where(_EXECUTIONS.c.id == execution_id, _EXECUTIONS.c.owner == owner)
        )
    ).first()
    if row is None:
        return None
    seq = int(row.last_seq) + 1
    result = await connection.execute(
        update(_EXECUTIONS)
        .where(_EXECUTIONS.c.id == execution_id, _EXECUTIONS.c.owner == owner)
        .values(
            status="failed",
            error=error,
            finished_at=now,
            owner=None,
            lease_expires_at=None,
            last_seq=seq,
        )
    )
    if not result.rowcount:
        return None
    await connection.execute(
        update(_NODE_RUNS)
        .where(
            _NODE_RUNS.c.execution_id == execution_id,
            _NODE_RUNS.c.status.notin_(sorted(TERMINAL_NODE_STATUSES)),
        )
        .values(status="cancelled", finished_at=now, due_at=None)
    )
    event = {
        "execution_id": execution_id,
        "seq": seq,
        "type": "execution.failed",
        "node_id": None,
        "ts": now,
        "data": {"error": error},
        "trace_id": row.trace_id,
        "tenant_id": row.tenant_id,
        "workflow_id": row.workflow_id,
        "published": False,
    }
    await connection.execute(insert(_EVENTS), [event])
    return event, row.trace_parent
