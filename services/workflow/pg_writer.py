"""The hot-path state write on PostgreSQL: one batch of a runner in ONE statement.

The fence on the execution's owner, the node rows and the events travel as a single
data-modifying CTE over `unnest`ed arrays: one round trip, atomic (a statement is its own
transaction), and about a third of the cost of the same work through SQLAlchemy Core
(measured: 0.4 ms vs 2.5 ms per batch on this machine). SQLite has its own writer
(sqlite_writer.py, the Core path in repository.py for an in-memory database); all write the
same rows.

The statement runs on connections of its own (`BatchWriter`), outside SQLAlchemy's pool:
a chain of nodes writes once per step, and the pool's checkout and checkin cost another
0.1-0.2 ms per write here. asyncpg keeps the statement prepared on each connection.

Group commit: about half of a step's statement on the server is per statement and per
commit (~130 of ~300 us of backend CPU, bench/pg_batch.py), so the batches of other
executions that arrive while a write is in flight wait for it and then go out together in one
statement (`_GROUP`), each still fenced on its own execution's owner. A batch that finds no
write in flight goes out at once: a sequential run or a chain never waits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from libs.common import jsonutil
from services.workflow.models import ACTIVE_TOP_LEVEL

# Errors of the raw driver that mean "the connection or the server went away": SQLAlchemy
# never sees them (the statement bypasses it), so they are translated here.
_DISCONNECTS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress"
    asyncpg.InternalClientError,  # the protocol's state broke (server shut down mid-statement)
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    OSError,
)

_EXECUTION_JSON = frozenset({"inputs", "outputs", "error"})
_NODE_COLUMNS = (
    ("status", "text"),
    ("attempt", "int"),
    ("output", "jsonb"),
    ("error", "jsonb"),
    ("active_ports", "jsonb"),
    ("attempts", "jsonb"),
    ("waiting", "jsonb"),
    ("inputs", "jsonb"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("due_at", "timestamptz"),
    ("checkpoint", "jsonb"),
)
#: An agent's journal entries to append to the stored checkpoint's journal (then the row's
#: checkpoint is null): the writes of a long run stay the size of one step, not of the run.
_NODE_NAMES = ("node_id", *(name for name, _ in _NODE_COLUMNS), "journal_append")
_EVENT_NAMES = ("seq", "type", "node_id", "ts", "data")

#: The outbox row of the batch's events (models.OutboxRow), after the `events` CTE: the
#: relay deletes it once the broker has confirmed them, the sweep publishes what a crash
#: left. None when no event was inserted (a retry after a commit whose reply was lost).
#: A batch's events are one run of the execution's sequence numbers.
_OUTBOX = """, outbox AS (
    INSERT INTO event_outbox (execution_id, low_seq, high_seq, created_at)
    SELECT {execution}, min(seq), max(seq), now() FROM events HAVING count(*) > 0
    RETURNING 1
)"""


#: The entries a node's journal-only writes appended since its checkpoint was stored (rows of
#: node_journal, in journal order): a write of the whole row folds them into the checkpoint.
#: Only the rows that continue the journal without a gap, as repository.node_runs reads it: from
#: the stored journal's length, the row at that length, then the one at the length it leaves,
#: and so on (a row past a gap, or one overlapping entries already taken, is left out).
_APPENDED = "d.execution_id = n.execution_id AND d.node_id = n.node_id"
_CHECKPOINT = f"""CASE
        WHEN u.journal_append IS NULL THEN u.checkpoint
        WHEN jsonb_array_length(u.journal_append) = 0
            AND NOT EXISTS (SELECT 1 FROM node_journal AS d WHERE {_APPENDED})
        THEN n.checkpoint
        ELSE jsonb_set(n.checkpoint, '{{journal}}', (n.checkpoint -> 'journal') || COALESCE((
            WITH RECURSIVE chain(length, entries) AS (
                SELECT jsonb_array_length(n.checkpoint -> 'journal'), NULL::jsonb
                UNION ALL
                SELECT c.length + jsonb_array_length(d.entries), d.entries
                FROM chain AS c
                JOIN node_journal AS d ON {_APPENDED} AND d.at = c.length
                WHERE jsonb_typeof(d.entries) = 'array' AND jsonb_array_length(d.entries) > 0
            )
            SELECT jsonb_agg(e.entry ORDER BY c.length, e.position)
            FROM chain AS c
            CROSS JOIN LATERAL jsonb_array_elements(c.entries) WITH ORDINALITY
                AS e(entry, position)
            WHERE c.entries IS NOT NULL
        ), '[]'::jsonb) || u.journal_append)
    END"""


#: A journal-only row: a node whose other columns are as stored, so that the write appends
#: its new journal entries and nothing else (an agent's step: the row's inputs and attempts
#: are not sent nor rewritten): inserted as a node_journal row, the node row is not touched
#: (rewriting its checkpoint with the entries appended cost O(journal) per step). Fenced like
#: the full rows: on the owner here, on the attempt by the core (it refuses a stale attempt's
#: report). `at`, the journal length the entries extend, is the row's key: a retry after a
#: commit whose reply was lost appends nothing.
_JOURNAL_NAMES = ("node_id", "at", "journal_append")


#: A node row's record in the batch's JSON (jsonb_to_recordset), and its update of node_runs
#: (the checkpoint with the journal-only writes folded in): one batch's and a group's alike.
_NODE_RECORD = ", ".join(
    ["node_id text", *(f"{name} {kind}" for name, kind in _NODE_COLUMNS), "journal_append jsonb"]
)
_NODE_SET = ", ".join(
    f"{name} = u.{name}" if name != "checkpoint" else f"checkpoint = {_CHECKPOINT}"
    for name, _ in _NODE_COLUMNS
)


@lru_cache(maxsize=64)
def _statement(
    execution_columns: tuple[str, ...],
    full_rows: bool,
    journal_rows: bool,
    notify: bool = False,
    folded: bool = False,
) -> str:
    # $1 execution id, $2 owner, then the execution's columns, then the node rows and the
    # events as one JSON array each (jsonb_to_recordset): encoding one document with orjson
    # costs the client a fraction of what binding a dozen typed arrays does.
    position = 3
    assignments = []
    for column in execution_columns:
        cast = "::jsonb" if column in _EXECUTION_JSON else ""
        assignments.append(f'"{column}" = ${position}{cast}')
        position += 1
    events, scalars = position, position + 1
    position += 4
    parts = [
        f"""
WITH fence AS (
    UPDATE executions SET {", ".join(assignments)}
    WHERE id = $1 AND owner = $2
    RETURNING 1
)"""
    ]
    if full_rows:
        nodes, node_ids = position, position + 1
        position += 2
        parts.append(f""", nodes AS (
    UPDATE node_runs AS n SET {_NODE_SET}
    FROM jsonb_to_recordset(${nodes}::jsonb) AS u({_NODE_RECORD})
    -- The ids again as an array: the index finds just these rows (joined on the records
    -- alone, the planner may read every node row of the execution, O(nodes) per write).
    WHERE n.execution_id = $1 AND n.node_id = ANY(${node_ids}::text[])
      AND n.node_id = u.node_id AND EXISTS (SELECT 1 FROM fence)
    RETURNING 1
)""")
    if folded:
        # The full rows that store a checkpoint: what their journal-only writes appended is
        # in it now (_CHECKPOINT folds it, or the checkpoint was replaced whole). Every CTE
        # reads the statement's snapshot: the fold still sees the rows deleted here.
        folded_ids = position
        position += 1
        parts.append(f""", folded AS (
    DELETE FROM node_journal AS d
    WHERE d.execution_id = $1 AND d.node_id = ANY(${folded_ids}::text[])
      AND EXISTS (SELECT 1 FROM fence)
    RETURNING 1
)""")
    if journal_rows:
        journals = position
        position += 1
        parts.append(f""", journals AS (
    INSERT INTO node_journal (execution_id, node_id, at, entries)
    SELECT $1, j.node_id, j.at, j.journal_append
    FROM jsonb_to_recordset(${journals}::jsonb)
        AS j(node_id text, at int, journal_append jsonb)
    WHERE EXISTS (SELECT 1 FROM fence) AND jsonb_array_length(j.journal_append) > 0
    -- A retry after a commit whose reply was lost finds its entries already there.
    ON CONFLICT (execution_id, node_id, at) DO NOTHING
    RETURNING 1
)""")
    parts.append(f""", events AS (
    INSERT INTO execution_events
        (execution_id, seq, type, node_id, ts, data, trace_id, tenant_id, workflow_id)
    SELECT $1, e.seq, e.type, e.node_id, e.ts, e.data,
           ${scalars}, ${scalars + 1}, ${scalars + 2}
    FROM jsonb_to_recordset(${events}::jsonb)
        AS e(seq int, type text, node_id text, ts timestamptz, data jsonb)
    WHERE EXISTS (SELECT 1 FROM fence)
    -- A retry after a commit whose reply was lost finds its events already there.
    ON CONFLICT (execution_id, seq) DO NOTHING
    RETURNING seq
){_OUTBOX.format(execution="$1")}""")
    if notify:
        # The execution's end announced to every replica's followers (completions.py) by
        # the transaction that writes it: delivered at its commit, no statement of its own.
        parts.append(f""", notice AS (
    SELECT pg_notify(${position}, $1) FROM fence
)
SELECT (SELECT count(*) FROM fence), (SELECT count(*) FROM notice)
""")
    else:
        parts.append("""
SELECT (SELECT count(*) FROM fence)
""")
    return "".join(parts)


#: The execution columns a batch writes (the core's status changes, the runner's last_seq, the
#: engine's lease): a batch setting any other goes alone, through `_statement`.
_GROUP_COLUMNS = (
    ("status", "text"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("owner", "text"),
    ("lease_expires_at", "timestamptz"),
    ("last_seq", "int"),
    ("outputs", "jsonb"),
    ("error", "jsonb"),
)
_GROUP_NAMES = frozenset(name for name, _ in _GROUP_COLUMNS)
_GROUP_EVENT_NAMES = ("execution_id", *_EVENT_NAMES)
_GROUP_NODE_NAMES = ("execution_id", *_NODE_NAMES)
_GROUP_JOURNAL_NAMES = ("execution_id", *_JOURNAL_NAMES)


def _group_statement() -> str:
    """Several executions' batches in ONE statement (group commit): the same writes as
    `_statement`'s, each batch fenced on its own execution's owner (`fence` returns the
    executions whose owner held; every other write joins it, so a batch fenced out writes
    nothing while the others commit), one outbox row per execution whose events were
    inserted, a NOTIFY per final batch. One text whatever the group's size or shapes: a
    column a batch does not set is written back as stored (an unchanged indexed column keeps
    the update HOT)."""
    record = ", ".join(f"{name} {kind}" for name, kind in _GROUP_COLUMNS)
    assignments = ", ".join(
        f"{name} = CASE WHEN b.given ? '{name}' THEN b.{name} ELSE x.{name} END"
        for name, _ in _GROUP_COLUMNS
    )
    return f"""
WITH b AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS b(
        id text, fence_owner text, given jsonb, notify boolean,
        trace_id text, tenant_id text, workflow_id text, {record})
), fence AS (
    UPDATE executions AS x SET {assignments}
    FROM b
    -- The ids again as an array: the index finds just these rows (joined on the records
    -- alone, the generic plan reads every execution).
    WHERE x.id = ANY($8::text[]) AND x.id = b.id AND x.owner = b.fence_owner
    RETURNING x.id, b.notify
), nodes AS (
    UPDATE node_runs AS n SET {_NODE_SET}
    FROM jsonb_to_recordset($2::jsonb) AS u(execution_id text, {_NODE_RECORD})
    WHERE n.execution_id = u.execution_id AND n.node_id = u.node_id
      AND u.execution_id IN (SELECT id FROM fence)
), folded AS (
    DELETE FROM node_journal AS d
    USING unnest($3::text[], $4::text[]) AS f(execution_id, node_id)
    -- Most groups fold nothing: a one-time filter then, so that node_journal is not read
    -- (the generic plan, made once per connection, may have found it empty: a seq scan).
    WHERE cardinality($3::text[]) > 0 AND d.execution_id = ANY($3::text[])
      AND d.execution_id = f.execution_id AND d.node_id = f.node_id
      AND f.execution_id IN (SELECT id FROM fence)
), journals AS (
    INSERT INTO node_journal (execution_id, node_id, at, entries)
    SELECT j.execution_id, j.node_id, j.at, j.journal_append
    FROM jsonb_to_recordset($5::jsonb)
        AS j(execution_id text, node_id text, at int, journal_append jsonb)
    WHERE j.execution_id IN (SELECT id FROM fence) AND jsonb_array_length(j.journal_append) > 0
    ON CONFLICT (execution_id, node_id, at) DO NOTHING
), events AS (
    INSERT INTO execution_events
        (execution_id, seq, type, node_id, ts, data, trace_id, tenant_id, workflow_id)
    SELECT e.execution_id, e.seq, e.type, e.node_id, e.ts, e.data,
           b.trace_id, b.tenant_id, b.workflow_id
    FROM jsonb_to_recordset($6::jsonb)
        AS e(execution_id text, seq int, type text, node_id text, ts timestamptz, data jsonb)
    JOIN b ON b.id = e.execution_id
    WHERE e.execution_id IN (SELECT id FROM fence)
    ON CONFLICT (execution_id, seq) DO NOTHING
    RETURNING execution_id, seq
), outbox AS (
    INSERT INTO event_outbox (execution_id, low_seq, high_seq, created_at)
    SELECT execution_id, min(seq), max(seq), now() FROM events GROUP BY execution_id
), notice AS (
    SELECT pg_notify($7, id) FROM fence WHERE notify
)
SELECT array(SELECT id FROM fence), (SELECT count(*) FROM notice)
"""


_GROUP = _group_statement()

#: A batch of more rows (nodes and events) goes alone, beside the writes in flight.
_LARGE = 200


def _json(value: Any) -> str | None:
    return None if value is None else jsonutil.dumps_str(value)


def _records(rows: list[dict[str, Any]], names: tuple[str, ...]) -> str:
    # Timestamps must carry their offset: orjson writes RFC 3339 for aware datetimes.
    return jsonutil.dumps_str([{name: row.get(name) for name in names} for row in rows])


_NEW_NODE_COLUMNS = (
    ("node_id", "text"),
    ("node_type", "text"),
    ("status", "text"),
    ("attempt", "int"),
    ("attempts", "jsonb"),
    ("output", "jsonb"),
    ("error", "jsonb"),
    ("active_ports", "jsonb"),
    ("inputs", "jsonb"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("waiting", "jsonb"),
    ("due_at", "timestamptz"),
    ("checkpoint", "jsonb"),
)


_NEW_NODE_NAMES = tuple(name for name, _ in _NEW_NODE_COLUMNS)


@dataclass(frozen=True)
class StartGuard:
    """What a start took from what its replica holds instead of looking it up
    (start_lookup): its insert checks it, and inserts nothing when it no longer holds."""

    #: The start named its version (else the version must still be the workflow's latest).
    explicit: bool
    #: The tenant's quota of active top-level executions (0: none counted).
    limit: int


@lru_cache(maxsize=8)
def _insert_statement(execution_columns: tuple[str, ...], guarded: bool = False) -> str:
    # A new execution, all its node rows and the events of its first batch in one statement
    # (one round trip, atomic): the start and the runner's first step share one commit.
    values = ", ".join(
        f"${i}::jsonb" if column in _EXECUTION_JSON else f"${i}"
        for i, column in enumerate(execution_columns, start=1)
    )
    nodes, events = len(execution_columns) + 1, len(execution_columns) + 2
    names = ", ".join(name for name, _ in _NEW_NODE_COLUMNS)
    record = ", ".join(f"{name} {kind}" for name, kind in _NEW_NODE_COLUMNS)
    columns = ", ".join(f'"{c}"' for c in execution_columns)
    guard = ""
    if guarded:
        # start_lookup's checks, on the execution's own workflow_id, tenant_id and version:
        # the workflow is the tenant's and not deleted, the version exists (and is the latest
        # when the start named none), the tenant is under its quota (the statuses written out,
        # as ix_executions_active_tenant's predicate is). Nothing is inserted when they fail.
        workflow, tenant, version = (
            f"${execution_columns.index(c) + 1}"
            for c in ("workflow_id", "tenant_id", "workflow_version")
        )
        explicit, limit = events + 1, events + 2
        guard = f"""guard AS (
    SELECT 1 FROM workflows AS w
    WHERE w.id = {workflow} AND w.tenant_id = {tenant} AND w.deleted_at IS NULL
      AND (${explicit}::boolean OR w.latest_version = {version})
      AND EXISTS (
          SELECT 1 FROM workflow_versions AS v
          WHERE v.workflow_id = w.id AND v.version = {version}
      )
      AND (${limit}::int = 0 OR (
          SELECT count(*) FROM executions AS e
          WHERE e.tenant_id = {tenant} AND {ACTIVE_TOP_LEVEL}
      ) < ${limit}::int)
), """
    # The count of executions inserted: 1, or 0 when the guard refused.
    return f"""
WITH {guard}execution AS (
    INSERT INTO executions ({columns})
    SELECT {values}{" WHERE EXISTS (SELECT 1 FROM guard)" if guarded else ""}
    RETURNING id, trace_id, tenant_id, workflow_id
), nodes AS (
    INSERT INTO node_runs (execution_id, {names})
    SELECT (SELECT id FROM execution), {names}
    FROM jsonb_to_recordset(${nodes}::jsonb) AS u({record})
    WHERE EXISTS (SELECT 1 FROM execution)
    RETURNING 1
), events AS (
    INSERT INTO execution_events
        (execution_id, seq, type, node_id, ts, data, trace_id, tenant_id, workflow_id)
    SELECT x.id, e.seq, e.type, e.node_id, e.ts, e.data, x.trace_id, x.tenant_id,
           x.workflow_id
    FROM execution AS x, jsonb_to_recordset(${events}::jsonb)
        AS e(seq int, type text, node_id text, ts timestamptz, data jsonb)
    RETURNING seq
){_OUTBOX.format(execution="(SELECT id FROM execution)")}
SELECT count(*) FROM execution
"""


# What a start needs to know, in one round trip: the workflow (visible to the tenant, not
# deleted), the version to run (the latest when none is named), its definition unless the
# caller already holds it compiled ($4: the versions it holds; versions never change), and,
# when the tenant has a quota ($5), its active top-level executions: the statuses written
# out, as ix_executions_active_tenant's predicate is (a bound array matches no partial index).
_START_LOOKUP = f"""
SELECT w.latest_version,
       v.version,
       CASE WHEN v.version = ANY($4::int[]) THEN NULL ELSE v.definition END,
       CASE WHEN $5::boolean THEN (
           SELECT count(*) FROM executions AS e
           WHERE e.tenant_id = $2 AND {ACTIVE_TOP_LEVEL}
       ) END
FROM workflows AS w
LEFT JOIN workflow_versions AS v
    ON v.workflow_id = w.id AND v.version = COALESCE(NULLIF($3::int, 0), w.latest_version)
WHERE w.id = $1 AND w.tenant_id = $2 AND w.deleted_at IS NULL
"""


@dataclass(frozen=True)
class StartLookup:
    """The answer of BatchWriter.start_lookup for a workflow that exists."""

    latest_version: int
    #: The version row found (None: the workflow has no such version).
    version: int | None
    #: Its definition, None when the version was among those the caller holds (or none).
    definition: dict[str, Any] | None
    #: Active top-level executions of the tenant, None when not counted.
    active: int | None


_REQUESTS_PENDING = """
SELECT EXISTS (
    SELECT 1 FROM execution_requests r JOIN executions e ON e.id = r.execution_id
    WHERE e.owner = $1 AND NOT r.done
)
"""


_ORPHANED = """
SELECT array(
    SELECT id FROM executions
    WHERE status = ANY($1::text[]) AND (owner IS NULL OR lease_expires_at < $2)
    ORDER BY created_at
    LIMIT $3
)
"""


_RENEW_LEASES = """
WITH renewed AS (
    UPDATE executions SET lease_expires_at = $3
    WHERE id = ANY($2::text[]) AND owner = $1
    RETURNING id
)
SELECT array(SELECT id FROM renewed)
"""


@dataclass
class _Batch:
    """One runner's batch, as `BatchWriter.write` got it; `future` set while it is queued."""

    execution_id: str
    owner: str
    execution_values: dict[str, Any]
    nodes: list[dict[str, Any]]
    events: list[dict[str, Any]]
    trace_id: str
    tenant_id: str
    workflow_id: str
    notify: str | None
    future: asyncio.Future[bool] | None = None


def _settle(batch: _Batch, owned: bool = False, error: BaseException | None = None) -> None:
    future = batch.future
    if future is None or future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(owned)


def _folded(full: list[dict[str, Any]]) -> list[str]:
    """The full rows that store a checkpoint (see `_statement`'s `folded`)."""
    return [
        node["node_id"]
        for node in full
        if node.get("checkpoint") is not None or node.get("journal_append") is not None
    ]


def _group_args(group: list[_Batch], channels: set[str]) -> list[Any]:
    batches: list[dict[str, Any]] = []
    full: list[dict[str, Any]] = []
    journal: list[dict[str, Any]] = []
    folded_executions: list[str] = []
    folded_nodes: list[str] = []
    events: list[dict[str, Any]] = []
    for batch in group:
        execution_id = batch.execution_id
        batches.append(
            {
                "id": execution_id,
                "fence_owner": batch.owner,
                "given": list(batch.execution_values),
                "notify": batch.notify is not None,
                "trace_id": batch.trace_id,
                "tenant_id": batch.tenant_id,
                "workflow_id": batch.workflow_id,
                **batch.execution_values,
            }
        )
        rows = [node for node in batch.nodes if "status" in node]
        full.extend({**node, "execution_id": execution_id} for node in rows)
        journal.extend(
            {**node, "execution_id": execution_id} for node in batch.nodes if "status" not in node
        )
        for node_id in _folded(rows):
            folded_executions.append(execution_id)
            folded_nodes.append(node_id)
        events.extend({**event, "execution_id": execution_id} for event in batch.events)
    return [
        jsonutil.dumps_str(batches),
        _records(full, _GROUP_NODE_NAMES),
        folded_executions,
        folded_nodes,
        _records(journal, _GROUP_JOURNAL_NAMES),
        _records(events, _GROUP_EVENT_NAMES),
        next(iter(channels), ""),
        [batch.execution_id for batch in group],
    ]


class BatchWriter:
    """A few asyncpg connections reserved for the hot-path statements (`write`, and
    `insert_execution` when an execution starts); one statement at a time on each."""

    def __init__(self, database_url: str, size: int = 4, group_limit: int = 1) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._slots = asyncio.Semaphore(size)
        self._idle: list[asyncpg.Connection] = []
        self._closed = False
        #: Batch writes in flight (alone or a group) and the batches waiting for one to end.
        self._group_limit = group_limit
        self._writing = 0
        self._queue: list[_Batch] = []
        self._groups: set[asyncio.Task[None]] = set()

    async def _connect(self) -> asyncpg.Connection:
        # These connections run only the statements above, whose rows are found by primary
        # key: a generic plan is as good as a custom one and saves planning every write.
        return await asyncpg.connect(
            self._dsn, server_settings={"plan_cache_mode": "force_generic_plan"}
        )

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close(timeout=2)

    async def write(
        self,
        *,
        execution_id: str,
        owner: str,
        execution_values: dict[str, Any],
        nodes: list[dict[str, Any]],
        events: list[dict[str, Any]],
        trace_id: str,
        tenant_id: str,
        workflow_id: str,
        notify: str | None = None,
    ) -> bool:
        """Write one batch; False (and nothing written) when owner no longer holds the
        execution. With `notify` (a channel), the transaction also NOTIFYs it with the
        execution's id. A lost connection raises SQLAlchemy's OperationalError, as the rest
        of the engine's database errors do, so that the caller's retries ride through
        outages.

        Group commit: a batch that finds `group_limit` writes in flight waits for one of them
        to end, and the batches that queued meanwhile (other executions') go out together in
        one statement (`_GROUP`); a batch that finds fewer goes out at once, alone (a
        sequential run or a chain never waits), and so does a large one (`_LARGE`), beside
        the writes in flight and not counted among them."""
        batch = _Batch(
            execution_id,
            owner,
            execution_values,
            nodes,
            events,
            trace_id,
            tenant_id,
            workflow_id,
            notify,
        )
        if len(nodes) + len(events) > _LARGE:
            # A fan-out's wave: its own statement's cost dwarfs the commit's, and the other
            # executions' writes must not wait behind it.
            return await self._write_alone(batch)
        if self._writing < self._group_limit and not self._queue:
            self._writing += 1
            try:
                return await self._write_alone(batch)
            finally:
                self._writing -= 1
                self._next_group()
        batch.future = asyncio.get_running_loop().create_future()
        self._queue.append(batch)
        # Cancelled while queued: _next_group skips it; while its group is in flight, the
        # group goes on for the others (as a cancelled statement may have committed).
        return await batch.future

    def _next_group(self) -> None:
        """Send what queued while the writes in flight ran, as one group."""
        if not self._queue or self._writing >= self._group_limit:
            return
        queued, self._queue = self._queue, []
        group = [batch for batch in queued if batch.future is not None and not batch.future.done()]
        if group:
            self._writing += 1
            task = asyncio.get_running_loop().create_task(self._write_group(group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    async def _write_group(self, group: list[_Batch]) -> None:
        try:
            together: list[_Batch] = []
            alone: list[_Batch] = []
            seen: set[str] = set()
            channels = {batch.notify for batch in group if batch.notify is not None}
            for batch in group:
                if (
                    batch.execution_id in seen
                    or len(channels) > 1
                    or not _GROUP_NAMES.issuperset(batch.execution_values)
                ):
                    alone.append(batch)
                else:
                    together.append(batch)
                    seen.add(batch.execution_id)
            if len(together) == 1:
                alone[:0] = together
            elif together:
                try:
                    row = await self._fetchrow(_GROUP, _group_args(together, channels))
                except asyncpg.PostgresError:
                    # One batch's reason (a unique violation, a bad value) must not fail the
                    # others: each is written by itself, and only that one fails.
                    alone[:0] = together
                except BaseException as error:
                    for batch in together:
                        _settle(batch, error=error)
                    if not isinstance(error, Exception):
                        raise
                else:
                    owned = set(row[0] or ())
                    for batch in together:
                        _settle(batch, batch.execution_id in owned)
            for batch in alone:
                if batch.future is not None and batch.future.done():
                    continue  # its caller was cancelled meanwhile: as if still queued
                try:
                    result = await self._write_alone(batch)
                except Exception as error:
                    _settle(batch, error=error)
                else:
                    _settle(batch, result)
        finally:
            for batch in group:  # cancelled on the way: its caller must not wait forever
                _settle(batch, error=asyncio.CancelledError())
            self._writing -= 1
            self._next_group()

    async def _write_alone(self, batch: _Batch) -> bool:
        columns = tuple(sorted(batch.execution_values))
        args: list[Any] = [batch.execution_id, batch.owner]
        for column in columns:
            value = batch.execution_values[column]
            args.append(_json(value) if column in _EXECUTION_JSON else value)
        args.append(_records(batch.events, _EVENT_NAMES))
        args.extend([batch.trace_id, batch.tenant_id, batch.workflow_id])
        full = [node for node in batch.nodes if "status" in node]
        journal = [node for node in batch.nodes if "status" not in node]
        if full:
            args.append(_records(full, _NODE_NAMES))
            args.append([node["node_id"] for node in full])
        folded = _folded(full)
        if folded:
            args.append(folded)
        if journal:
            args.append(_records(journal, _JOURNAL_NAMES))
        if batch.notify is not None:
            args.append(batch.notify)
        row = await self._fetchrow(
            _statement(columns, bool(full), bool(journal), batch.notify is not None, bool(folded)),
            args,
        )
        return bool(row[0])

    async def insert_execution(
        self,
        execution: dict[str, Any],
        nodes: list[dict[str, Any]],
        events: list[dict[str, Any]] | None = None,
        guard: StartGuard | None = None,
    ) -> bool:
        """Insert a new execution row, its node rows and its first events; with a guard,
        only when it holds (False: nothing inserted). A duplicate (the idempotency key's
        unique index) raises SQLAlchemy's IntegrityError, as the ORM path would."""
        columns = tuple(sorted(execution))
        args: list[Any] = [
            _json(execution[c]) if c in _EXECUTION_JSON else execution[c] for c in columns
        ]
        args.append(_records(nodes, _NEW_NODE_NAMES))
        args.append(_records(events or [], _EVENT_NAMES))
        if guard is not None:
            args.extend([guard.explicit, guard.limit])
        try:
            row = await self._fetchrow(_insert_statement(columns, guard is not None), args)
        except asyncpg.UniqueViolationError as error:
            raise IntegrityError("insert_execution", None, error) from error
        return bool(row[0])

    async def start_lookup(
        self,
        *,
        workflow_id: str,
        tenant_id: str,
        version: int,
        held_versions: list[int],
        count_active: bool,
    ) -> StartLookup | None:
        """The workflow, version and quota count of a start in one statement (three ORM
        reads and a session before); None when the tenant has no such workflow."""
        row = await self._fetchrow(
            _START_LOOKUP,
            [
                workflow_id,
                tenant_id,
                version,
                held_versions,
                count_active,
            ],
        )
        if row is None:
            return None
        latest, found, definition, active = row
        return StartLookup(
            latest_version=int(latest),
            version=None if found is None else int(found),
            definition=None if definition is None else jsonutil.loads(definition),
            active=None if active is None else int(active),
        )

    async def requests_pending(self, owner: str) -> bool:
        """Whether some request forwarded by another replica waits for owner: the request
        poll's question (several times a second) in one statement, its ORM read only when
        the answer is yes."""
        row = await self._fetchrow(_REQUESTS_PENDING, [owner])
        return bool(row[0])

    async def orphaned_executions(
        self, statuses: tuple[str, ...], now: dt.datetime, limit: int = 100
    ) -> list[str]:
        """The oldest active executions no replica holds (no owner, or its lease lapsed):
        the recovery poll's question, every few seconds on every replica, in one statement
        instead of an ORM session."""
        row = await self._fetchrow(_ORPHANED, [list(statuses), now, limit])
        return list(row[0] or ())

    async def renew_leases(
        self, owner: str, execution_ids: list[str], lease_until: dt.datetime
    ) -> set[str]:
        """Extend the leases owner still holds among execution_ids; returns those ids. One
        statement, the same whatever the number of ids (the ORM's IN list was a statement
        of its own, compiled and prepared, for every length)."""
        row = await self._fetchrow(_RENEW_LEASES, [owner, execution_ids, lease_until])
        return set(row[0] or ())

    async def _fetchrow(self, statement: str, args: list[Any]) -> Any:
        async with self._slots:
            try:
                connection = self._idle.pop() if self._idle else await self._connect()
            except _DISCONNECTS as error:
                raise OperationalError("write_batch", None, error) from error
            try:
                row = await connection.fetchrow(statement, *args)
            except _DISCONNECTS as error:
                connection.terminate()
                raise OperationalError("write_batch", None, error) from error
            except asyncpg.PostgresError:
                self._idle.append(connection)  # the statement failed, the connection is fine
                raise
            except BaseException:
                # Cancelled or failed mid-statement: its state is unknown, do not reuse it.
                connection.terminate()
                raise
            if self._closed:
                await connection.close(timeout=2)
            else:
                self._idle.append(connection)
        return row
