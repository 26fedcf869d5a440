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
    tuple_,
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
    OutboxRow,
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
_OUTBOX = cast(Table, OutboxRow.__table__)
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
    """Insert committed-to-be events and their outbox rows (the caller's transaction)."""
    if events:
        await connection.execute(insert(_EVENTS), events)
        await connection.execute(insert(_OUTBOX), outbox_rows(events, utcnow()))


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


async def due_outbox(
    session: AsyncSession, limit: int, older_than: dt.datetime | None = None
) -> list[tuple[str, int, int]]:
    """The oldest outbox rows (execution id, low seq, high seq), committed before older_than
    when given: the sweep's. On PostgreSQL they are locked for the session's transaction
    and rows another relay's sweep holds are skipped (two replicas sweeping one backlog take
    disjoint parts: no lock waits between them, no deadlock, no duplicates)."""
    query = select(_OUTBOX.c.execution_id, _OUTBOX.c.low_seq, _OUTBOX.c.high_seq)
    if older_than is not None:
        query = query.where(_OUTBOX.c.created_at < older_than)
    query = (
        query.order_by(_OUTBOX.c.created_at, _OUTBOX.c.execution_id, _OUTBOX.c.low_seq)
        .limit(limit)
        .with_for_update(skip_locked=True)  # not rendered on SQLite (no row locks)
    )
    return [(row[0], row[1], row[2]) for row in (await session.execute(query)).all()]


async def outbox_events(
    session: AsyncSession, rows: Sequence[tuple[str, int, int]]
) -> Sequence[EventRow]:
    """The events the outbox rows name, each execution's in order (an execution deleted
    since has none left)."""
    if not rows:
        return []
    query = (
        select(EventRow)
        .join(
            OutboxRow,
            and_(
                OutboxRow.execution_id == EventRow.execution_id,
                EventRow.seq.between(OutboxRow.low_seq, OutboxRow.high_seq),
            ),
        )
        .where(
            tuple_(OutboxRow.execution_id, OutboxRow.low_seq).in_(
                [(execution_id, low) for execution_id, low, _ in rows]
            )
        )
        .order_by(EventRow.execution_id, EventRow.seq)
    )
    return (await session.scalars(query)).all()


async def trace_parents(session: AsyncSession, execution_ids: Iterable[str]) -> dict[str, str]:
    """The trace root (traceparent) of each execution named."""
    rows = await session.execute(
        select(ExecutionRow.id, ExecutionRow.trace_parent).where(
            ExecutionRow.id.in_(set(execution_ids))
        )
    )
    return {execution_id: trace_parent for execution_id, trace_parent in rows.all()}


def outbox_rows(events: Iterable[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
    """The outbox rows of committed events: one per execution and run of consecutive
    sequence numbers (a batch of the runner is one run of one execution)."""
    by_execution: dict[str, list[int]] = {}
    for event in events:
        by_execution.setdefault(event["execution_id"], []).append(event["seq"])
    rows = []
    for execution_id, seqs in by_execution.items():
        seqs.sort()
        low = high = seqs[0]
        for seq in seqs[1:]:
            if seq != high + 1:
                rows.append(_outbox_row(execution_id, low, high, now))
                low = seq
            high = seq
        rows.append(_outbox_row(execution_id, low, high, now))
    return rows


def _outbox_row(execution_id: str, low: int, high: int, now: dt.datetime) -> dict[str, Any]:
    return {"execution_id": execution_id, "low_seq": low, "high_seq": high, "created_at": now}


# PostgreSQL: the outbox rows within every range of a relay round in one statement.
_CLEAR_RANGES = text(
    "DELETE FROM event_outbox AS o"
    " USING unnest(CAST(:ids AS varchar[]), CAST(:lows AS integer[]),"
    " CAST(:highs AS integer[])) AS k(execution_id, low, high)"
    " WHERE o.execution_id = k.execution_id AND o.low_seq BETWEEN k.low AND k.high"
    " AND o.high_seq <= k.high"
)
_CLEAR_RANGE = delete(_OUTBOX).where(
    _OUTBOX.c.execution_id == bindparam("k_id"),
    _OUTBOX.c.low_seq.between(bindparam("k_low"), bindparam("k_high")),
    _OUTBOX.c.high_seq <= bindparam("k_high"),
)


async def delete_outbox(
    connection: AsyncConnection, ranges: Iterable[tuple[str, int, int]]
) -> None:
    """Delete the outbox rows of relayed events: those lying within one of the ranges
    (execution id, low seq, high seq) the broker confirmed. One statement on PostgreSQL
    (by primary key: the execution and the batch's first seq); an executemany on SQLite.
    The ranges in the primary key's order, so that two relays' deletes take their row locks
    in one order."""
    keys = sorted(set(ranges))
    if not keys:
        return
    if connection.dialect.name == "postgresql":
        await connection.execute(
            _CLEAR_RANGES,
            {
                "ids": [key[0] for key in keys],
                "lows": [key[1] for key in keys],
                "highs": [key[2] for key in keys],
            },
        )
    else:
        await connection.execute(
            _CLEAR_RANGE, [{"k_id": key[0], "k_low": key[1], "k_high": key[2]} for key in keys]
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
    }
    await insert_event_rows(connection, [event])
    return event, row.trace_parent
