"""The engine of a workflow replica: starts executions, owns their runners, persists their
batches, takes over executions whose owner died, and bounds concurrency."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

from opentelemetry import trace
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from libs.common.agents import append_messages
from libs.common.cache import CacheScope, create_result_cache
from libs.common.child_ids import child_execution_id
from libs.common.db import utcnow
from libs.common.definition import ON_FAILURE_NODE_ID, WorkflowDefinition
from libs.common.errors import (
    Conflict,
    FailedPrecondition,
    HeddleError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    error_from_dict,
)
from libs.common.kv import KV
from libs.common.periodic import periodic
from libs.common.secrets import redact
from libs.common.tracing import (
    context_from_traceparent,
    current_traceparent,
    trace_id_of,
    tracer,
)
from services.workflow import pg_writer, sqlite_writer
from services.workflow import repository as repo
from services.workflow.catalog import NodeCatalog
from services.workflow.compiled import CompiledWorkflow, compile_workflow
from services.workflow.completions import CHANNEL, CompletionNotices
from services.workflow.dispatcher import NodeDispatcher
from services.workflow.events import EventNotifier
from services.workflow.inputs import validate_human_input, validate_inputs
from services.workflow.liveness import ReplicaLiveness
from services.workflow.metrics import EXECUTIONS, EXECUTIONS_LOADED, EXECUTIONS_STARTED
from services.workflow.models import ExecutionRequestRow, ExecutionRow, NodeRunRow
from services.workflow.parking import Parking
from services.workflow.planner import DefinitionGraph
from services.workflow.priority import Waiters
from services.workflow.runner import (
    ExecutionRunner,
    Flush,
    LostOwnership,
    NodeState,
    Unwritten,
)
from services.workflow.secrets import SecretStore
from services.workflow.settings import WorkflowSettings
from services.workflow.status import ACTIVE_EXECUTION_STATUSES, FINAL_EXECUTION_STATUSES

if TYPE_CHECKING:
    from services.workflow.relay import OutboxRelay

log = logging.getLogger(__name__)
_TRACER = tracer("workflow")

T = TypeVar("T")

_TRANSIENT_DB_ERRORS = (OperationalError, DBAPIError, OSError, ConnectionError)


def _current_link() -> list[trace.Link]:
    # A retry continues its original's trace; the request that asked for it is linked.
    current = trace.get_current_span().get_span_context()
    return [trace.Link(current)] if current.is_valid else []


__all__ = ["CompiledWorkflow", "Engine"]

#: At most this many nodes, over the versions saved here and not compiled yet (one larger
#: version is still kept: it is the one most likely to run next).
_SAVED_NODES = 200_000

_EXECUTION_KEYS = tuple(column.key for column in ExecutionRow.__table__.columns)


#: Execution ids per lease-renewal statement.
_LEASE_CHUNK = 10_000

#: The priority of an execution that names none (0-9, higher first when slots are saturated).
DEFAULT_PRIORITY = 5


def _priority_of(runner: ExecutionRunner) -> int:
    return runner.priority


def _tenant_of(runner: ExecutionRunner) -> str:
    return runner.tenant_id


class Engine:
    """Runs the executions this replica owns."""

    def __init__(
        self,
        settings: WorkflowSettings,
        sessions: async_sessionmaker[AsyncSession],
        dispatcher: NodeDispatcher,
        catalog: NodeCatalog,
        kv: KV,
        notifier: EventNotifier,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.db: AsyncEngine = sessions.kw["bind"]
        self._writer = (
            pg_writer.BatchWriter(self.db.url.render_as_string(hide_password=False))
            if self.db.dialect.name == "postgresql"
            else None
        )
        sqlite_file = sqlite_writer.file_database(self.db)
        self._sqlite_writer = (
            sqlite_writer.SQLiteBatchWriter(self.db, sqlite_file) if sqlite_file else None
        )
        self.dispatcher = dispatcher
        self.catalog = catalog
        self.kv = kv
        # Bounded in-process tier, the shared tier (HEDDLE_CACHE_URL or the KV's Redis), and the
        # generations that DELETE /api/v1/cache bumps kept in `kv` (libs/common/cache.py).
        self.result_cache, self._cache_store = create_result_cache(settings, kv)
        self.notifier = notifier
        self.secrets = SecretStore(sessions, settings.secrets_key)
        self.relay: OutboxRelay | None = None
        # Set by the server on PostgreSQL: tells the other replicas' followers of an end.
        self.completions: CompletionNotices | None = None
        #: Ended executions whose final write NOTIFYd their end itself (no announce).
        self._announced: set[str] = set()
        self.runners: dict[str, ExecutionRunner] = {}
        #: Executions this replica owns that only wait, unloaded (services/workflow/parking.py).
        self.parking = Parking(self._claim_and_resume)
        #: Until when this replica's lease on each execution it drives is known to hold.
        self._leases: dict[str, dt.datetime] = {}
        self._compiled: OrderedDict[tuple[str, int], CompiledWorkflow] = OrderedDict()
        #: Versions saved through this replica and not compiled yet: their validated
        #: definition and graph, which the first compile takes instead of parsing the stored
        #: JSON again (a few only: a version saved here may never run here).
        self._saved: OrderedDict[
            tuple[str, int], tuple[WorkflowDefinition, DefinitionGraph | None]
        ] = OrderedDict()
        self._free_slots = settings.max_concurrency_global
        #: Who to wake when slots free up, highest priority first (services/workflow/priority).
        self._starved: Waiters[ExecutionRunner] = Waiters(_priority_of, _tenant_of)
        #: Runners refused some of the slots they asked for, until a request is met in full
        #: (the fairness rule's "tenants waiting"; `_starved` is only who to wake).
        self._wanting: Waiters[ExecutionRunner] = Waiters(_priority_of, _tenant_of)
        self._background: list[asyncio.Task[None]] = []
        self._closing = False
        self._recover_now = asyncio.Event()
        self.liveness = (
            ReplicaLiveness(
                self.db.url.render_as_string(hide_password=False),
                settings.replica_id,
                check_s=settings.liveness_check_s,
                settle_s=settings.lease_ttl_s,
                on_released=lambda _replicas: self._recover_now.set(),
            )
            if self.db.dialect.name == "postgresql" and settings.liveness_check_s > 0
            else None
        )

    # ---- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._background = [
            # Woken at once when the liveness check released a dead replica's executions.
            periodic(
                "engine-recovery",
                self.settings.recovery_interval_s,
                self._recover_orphans,
                immediately=True,
                wake=self._recover_now,
            ),
            periodic("engine-leases", self.settings.lease_ttl_s / 3, self._renew_leases),
            periodic("engine-requests", self.settings.request_poll_s, self._apply_requests),
        ]
        if self.liveness is not None:
            self.liveness.start()

    async def stop(self) -> None:
        """Stop driving executions; their leases lapse and another replica takes over."""
        self._closing = True
        for task in self._background:
            task.cancel()
        runners = list(self.runners.values())
        for runner in runners:
            if runner.task is not None:
                runner.task.cancel()
        await asyncio.gather(
            *self._background, *(r.task for r in runners if r.task), return_exceptions=True
        )
        await self.parking.close()
        if self.liveness is not None:
            # Last: once the session closes, peers take over what the runners left.
            await self.liveness.stop()
        if self._writer is not None:
            await self._writer.close()
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        if self._cache_store is not None:
            await self._cache_store.close()

    def held(self) -> dict[str, int]:
        """What this replica holds, by registry: each goes back to zero once the executions
        it drives ended, but `compiled` (definitions by workflow version, at most 256) and
        `saved` (versions saved here and not run yet, at most 8). For
        tests and the memory snapshots of bench/waiters.py (libs/common/memdebug.py)."""
        parking = self.parking.held()
        return {
            "runners": len(self.runners),
            "parked": parking["parked"],
            "parking_loading": parking["loading"],
            "parking_timers_due": parking["due"],
            "leases": len(self._leases),
            "starved": len(self._starved),
            "wanting": len(self._wanting),
            "follower_wakeups": self.notifier.waiting(),
            "dispatch_pending": self.dispatcher.pending_attempts(),
            "compiled": len(self._compiled),
            "saved": len(self._saved),
        }

    # ---- compiled definitions -----------------------------------------------------------

    async def compiled(
        self, workflow_id: str, version: int, raw: dict[str, Any], tenant_id: str = ""
    ) -> CompiledWorkflow:
        key = (workflow_id, version)
        found = self._compiled.get(key)
        if found is not None:
            self._compiled.move_to_end(key)
            return found
        saved = self._saved.pop(key, None)
        # validated when saved through this replica: no second parse
        source, graph = saved if saved is not None else (raw, None)
        node_types = await self.catalog.for_tenant(tenant_id)  # its custom types too
        compiled = compile_workflow(workflow_id, version, source, node_types, graph)
        self._compiled[key] = compiled
        while len(self._compiled) > 256:
            self._compiled.popitem(last=False)
        return compiled

    def remember_saved(
        self,
        workflow_id: str,
        version: int,
        definition: WorkflowDefinition,
        graph: DefinitionGraph | None,
    ) -> None:
        """A version was just saved through this replica (WorkflowStore's on_saved): keep
        its validated definition for its first compile. The stored JSON is this
        definition's dump, so parsing it would give the same definition."""
        key = (workflow_id, version)
        if key in self._compiled:
            return
        # Bounded by count and by size (an editor saving a large workflow over and over
        # must not pile up its versions): only the newest saved version of a workflow is
        # kept, and at most _SAVED_NODES nodes in all.
        for held in [k for k in self._saved if k[0] == workflow_id]:
            del self._saved[held]
        self._saved[key] = (definition, graph)
        nodes = sum(len(saved.nodes) for saved, _ in self._saved.values())
        while len(self._saved) > 8 or (nodes > _SAVED_NODES and len(self._saved) > 1):
            _, (dropped, _) = self._saved.popitem(last=False)
            nodes -= len(dropped.nodes)

    def type_version(self, node_type: str, tenant_id: str = "") -> int:
        return self.catalog.version(node_type, tenant_id)

    # ---- starting executions ------------------------------------------------------------

    async def start_execution(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        version: int,
        inputs: Any,
        idempotency_key: str | None,
        parent_execution_id: str | None = None,
        parent_node_id: str | None = None,
        trigger: str = "api",
        depth: int = 0,
        retry_of: str | None = None,
        reused: dict[str, NodeRunRow] | None = None,
        trace_parent: str = "",
        priority: int = DEFAULT_PRIORITY,
        forked_from: tuple[str, str] | None = None,
        execution_id: str | None = None,
    ) -> tuple[ExecutionRow, bool]:
        """Persist a new execution with every node pending, then start running it.

        With an idempotency key that was seen before, returns that execution instead; so
        with an execution_id (the caller's choice, a UUID) that exists for the same tenant
        and workflow (Conflict when it is another tenant's or workflow's). The
        execution's trace is rooted in an `execution.start` span, a child of trace_parent
        (a retried execution continues its original's trace) or else of the current span.
        """
        start = _Start(
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            version=version,
            inputs=inputs,
            idempotency_key=idempotency_key,
            parent_execution_id=parent_execution_id,
            parent_node_id=parent_node_id,
            trigger=trigger,
            depth=depth,
            retry_of=retry_of,
            reused=reused,
            trace_parent=trace_parent,
            priority=priority,
            forked_from=forked_from,
            execution_id=execution_id,
        )
        try:
            return await self._start(start, guess=True)
        except _GuessFailed:
            # The version guessed refused it (its insert's guard, or its inputs): nothing
            # was inserted; made again with the lookup, which names what to run or refuses.
            return await self._start(start, guess=False)

    async def _start(self, start: _Start, *, guess: bool) -> tuple[ExecutionRow, bool]:
        """start_execution's one attempt. `guess`: on PostgreSQL, a version held compiled
        here is not looked up (_GuessFailed when its guard or its inputs refuse it);
        without it the workflow is always looked up."""
        version, depth = start.version, start.depth
        definition: dict[str, Any] | None = None
        if start.parent_execution_id or start.idempotency_key or self._writer is None:
            async with self.sessions() as session:
                if start.parent_execution_id:
                    parent = await repo.get_execution(
                        session, start.tenant_id, start.parent_execution_id
                    )
                    if parent is None:
                        raise NotFound(f"parent execution {start.parent_execution_id!r} not found")
                    depth = max(depth, parent.depth + 1)
                self._check_depth(depth)
                if start.idempotency_key:
                    existing = await repo.find_execution_by_key(
                        session, start.tenant_id, start.idempotency_key
                    )
                    if existing is not None:
                        return existing, False
                if self._writer is None:
                    workflow = await repo.get_workflow(session, start.tenant_id, start.workflow_id)
                    if workflow is None:
                        raise NotFound(f"workflow {start.workflow_id!r} not found")
                    version = version or workflow.latest_version
                    version_row = await repo.get_version(session, start.workflow_id, version)
                    if version_row is None:
                        raise NotFound(f"workflow {start.workflow_id!r} has no version {version}")
                    definition = version_row.definition
                    if start.parent_execution_id is None:
                        await self._check_concurrency_quota(session, start.tenant_id)
        else:
            # PostgreSQL, a top-level start without a key: nothing to read through a session
            # (the lookup below is one statement on the writer's connection).
            self._check_depth(depth)
        # PostgreSQL, a version held compiled here (the named one, else the newest held):
        # not looked up, its insert checks what the lookup would have (StartGuard) and
        # inserts nothing when it fails, and the start is made again with the lookup.
        merged = self._writer is not None and not (
            start.parent_execution_id and start.idempotency_key
        )
        guessed = self._held_version(start.workflow_id, version) if guess and merged else None
        guard: pg_writer.StartGuard | None = None
        if guessed is not None:
            guard = pg_writer.StartGuard(
                explicit=bool(version),
                limit=self._quota_limit(
                    start.tenant_id, top_level=start.parent_execution_id is None
                ),
            )
            version = guessed
        elif self._writer is not None:
            version, definition = await self._start_lookup(
                start.tenant_id,
                start.workflow_id,
                version,
                top_level=start.parent_execution_id is None,
            )
        held = (start.workflow_id, version)
        if definition is None and held not in self._compiled and held not in self._saved:
            async with self.sessions() as session:  # evicted since the lookup: read it again
                version_row = await repo.get_version(session, start.workflow_id, version)
            if version_row is None:
                raise NotFound(f"workflow {start.workflow_id!r} has no version {version}")
            definition = version_row.definition
        compiled = await self.compiled(
            start.workflow_id, version, definition or {}, start.tenant_id
        )
        try:
            resolved_inputs = validate_inputs(compiled.definition, start.inputs)
        except InvalidArgument:
            if guard is None:
                raise
            raise _GuessFailed("") from None  # refused by the version guessed: the one to run?
        now = utcnow()
        span = _TRACER.start_span(
            "execution.start",
            context=context_from_traceparent(start.trace_parent),
            links=_current_link() if start.trace_parent else None,
            attributes={"heddle.workflow_id": start.workflow_id, "heddle.trigger": start.trigger},
        )
        given: dict[str, Any] = dict(
            # A child's id follows from its key: the parent node names it before it starts it.
            # A caller that chose one (POST /run) waits or starts again by it after a broken
            # call.
            id=child_execution_id(start.tenant_id, start.idempotency_key)
            if start.parent_execution_id and start.idempotency_key
            else start.execution_id or str(uuid.uuid4()),
            tenant_id=start.tenant_id,
            workflow_id=start.workflow_id,
            workflow_version=version,
            status="pending",
            inputs=resolved_inputs,
            idempotency_key=start.idempotency_key,
            parent_execution_id=start.parent_execution_id,
            parent_node_id=start.parent_node_id,
            depth=depth,
            trigger=start.trigger,
            retry_of=start.retry_of,
            forked_from_execution_id=start.forked_from[0] if start.forked_from else None,
            forked_from_node=start.forked_from[1] if start.forked_from else None,
            trace_id=trace_id_of(span),
            trace_parent=current_traceparent(span),
            created_at=now,
            owner=self.settings.replica_id,
            lease_expires_at=self._lease_until(),
            last_seq=0,
            crashes=0,
            priority=start.priority,
        )
        row = ExecutionRow(**given)
        # Every column, as the row holds them (the writer's insert names them all): built
        # here, not read back from the ORM instance's attributes (~30 getattrs a start).
        values = dict.fromkeys(_EXECUTION_KEYS)
        values.update(given)
        node_rows = []
        for node in compiled.definition.nodes:
            previous = (start.reused or {}).get(node.id)
            entry: dict[str, Any] = {
                "execution_id": row.id,
                "node_id": node.id,
                "node_type": node.type,
                "status": "pending",
                "attempt": 0,
                "attempts": [],
                # Every row names the same columns: one executemany INSERT needs uniform rows
                # (a retry mixes reused rows, which carry these, with fresh ones).
                "output": None,
                "active_ports": None,
                "inputs": None,
                "started_at": None,
                "finished_at": None,
                "checkpoint": None,
            }
            if previous is not None and previous.status == "pending":
                # A fork of an agent with a step edited: the node runs, resuming from the
                # edited journal (services/gateway/routes/forks.py).
                entry.update(checkpoint=previous.checkpoint)
            elif previous is not None:
                entry.update(
                    status=previous.status,
                    attempt=previous.attempt,
                    output=previous.output,
                    active_ports=previous.active_ports,
                    attempts=previous.attempts,
                    inputs=previous.inputs,
                    started_at=previous.started_at,
                    finished_at=previous.finished_at,
                )
            node_rows.append(entry)
        nodes = {
            entry["node_id"]: NodeState(
                node_id=entry["node_id"],
                node_type=entry["node_type"],
                status=entry["status"],
                attempt=entry["attempt"],
                output=entry.get("output"),
                active_ports=entry.get("active_ports"),
                attempts=list(entry.get("attempts") or []),
                inputs=entry.get("inputs"),
                started_at=entry.get("started_at"),
                finished_at=entry.get("finished_at"),
                checkpoint=entry.get("checkpoint"),
            )
            for entry in node_rows
        }
        if start.execution_id is not None and (
            start.execution_id in self.runners or start.execution_id in self.parking
        ):
            # The chosen id is held here (a start sent again): a second runner under it must
            # not take its place in `runners` (nothing awaited between this and _launch).
            span.end()
            return await self._start_held(start, guess=guess)
        # PostgreSQL, an id of its own (a child's derives from its key and may be held here
        # already; a chosen one is not, see above): the rows go in with the runner's first
        # batch, one statement for the start and the first step; the start answers once it
        # is committed. Nothing is dispatched before (the runner sends only what a committed
        # batch says): a duplicate id's insert fails and its runner ends without a trace.
        try:
            if merged:
                runner = self._launch(row, compiled, nodes, Unwritten(values, node_rows, guard))
                assert runner.persisted is not None
                await runner.persisted
            elif self._writer is not None:
                # One statement on the writer's own connection (the ORM's flush and
                # executemany cost more CPU than the rest of a short execution).
                await self._writer.insert_execution(values, node_rows)
            else:
                async with self.sessions() as session, session.begin():
                    session.add(row)
                    await session.flush()
                    await repo.insert_node_runs(session, node_rows)
        except IntegrityError:
            span.end()
            # Two requests with one idempotency key (or one chosen id) raced: the other won.
            async with self.sessions() as session:
                existing = (
                    await repo.find_execution_by_key(
                        session, start.tenant_id, start.idempotency_key
                    )
                    if start.idempotency_key
                    else None
                )
                if existing is None and start.execution_id is not None:
                    taken = await session.get(ExecutionRow, start.execution_id)
                    if taken is not None:
                        return _same_start(start, taken), False
            if existing is None:
                raise
            return existing, False
        except _GuessFailed:
            span.end()
            raise
        span.set_attribute("heddle.execution_id", row.id)
        span.end()
        EXECUTIONS_STARTED.labels(start.trigger).inc()
        if not merged:
            self._launch(row, compiled, nodes)
        return row, True

    async def _start_held(self, start: _Start, *, guess: bool) -> tuple[ExecutionRow, bool]:
        """A start whose chosen id is held here: that execution once its own start is
        committed (made again when that start failed, having written nothing)."""
        assert start.execution_id is not None
        runner = self.runners.get(start.execution_id)
        if runner is not None and runner.persisted is not None:
            try:
                await asyncio.shield(runner.persisted)
            except Exception:
                return await self._start(start, guess=guess)
        if runner is not None:
            return _same_start(start, runner.row), False
        async with self.sessions() as session:  # parked here: its row is written
            taken = await session.get(ExecutionRow, start.execution_id)
        if taken is None:  # unparked and ended meanwhile, then deleted: start it anew
            return await self._start(start, guess=guess)
        return _same_start(start, taken), False

    def _held_version(self, workflow_id: str, version: int) -> int | None:
        """The version a start of workflow_id (version 0: the latest) would run, when this
        replica holds it compiled or saved: the one named, else the newest held."""
        if version:
            key = (workflow_id, version)
            return version if key in self._compiled or key in self._saved else None
        return max(self._held_versions(workflow_id), default=None)

    def _held_versions(self, workflow_id: str) -> list[int]:
        """The versions of workflow_id held compiled or saved here (a saved one is held too:
        its first compile takes the saved definition)."""
        return [held for wid, held in [*self._compiled, *self._saved] if wid == workflow_id]

    def _quota_limit(self, tenant_id: str, *, top_level: bool) -> int:
        """The tenant's quota of active top-level executions a start checks (0: none, as
        for a child: a parent waiting on its child must not deadlock its tenant)."""
        return self.settings.quota_for(tenant_id).max_concurrent_executions if top_level else 0

    async def _start_lookup(
        self, tenant_id: str, workflow_id: str, version: int, *, top_level: bool
    ) -> tuple[int, dict[str, Any] | None]:
        """PostgreSQL: the version a start runs and its definition (None when it is compiled
        here already), the workflow's existence and the tenant's quota checked, in one
        statement on the writer's connection (the ORM's three reads cost more CPU than the
        rest of a start)."""
        assert self._writer is not None
        limit = self._quota_limit(tenant_id, top_level=top_level)
        found = await self._writer.start_lookup(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            version=version,
            held_versions=self._held_versions(workflow_id),
            count_active=bool(limit),
        )
        if found is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        version = version or found.latest_version
        if found.version is None:
            raise NotFound(f"workflow {workflow_id!r} has no version {version}")
        if limit and (found.active or 0) >= limit:
            _quota_exceeded(limit)
        return version, found.definition

    def _check_depth(self, depth: int) -> None:
        if depth > self.settings.max_call_depth:
            raise FailedPrecondition(
                f"sub-workflow call depth {depth} exceeds the limit of "
                f"{self.settings.max_call_depth}"
            )

    async def _check_concurrency_quota(self, session: AsyncSession, tenant_id: str) -> None:
        # Children are not counted: a parent waiting on its child must not deadlock its tenant
        # (their number is bounded by max_call_depth and the nodes of the parent).
        # Counted, not reserved: two starts racing may both pass, so the limit is soft by the
        # number of gateway/workflow replicas; it bounds a tenant, it is not billing.
        limit = self.settings.quota_for(tenant_id).max_concurrent_executions
        if limit and await repo.count_active_executions(session, tenant_id) >= limit:
            _quota_exceeded(limit)

    def _launch(
        self,
        row: ExecutionRow,
        compiled: CompiledWorkflow,
        nodes: dict[str, NodeState],
        unwritten: Unwritten | None = None,
    ) -> ExecutionRunner:
        runner = ExecutionRunner(self, row, compiled, nodes)
        if unwritten is not None:
            runner.unwritten = unwritten
            runner.persisted = asyncio.get_running_loop().create_future()
        self.runners[row.id] = runner
        self._leases[row.id] = row.lease_expires_at or utcnow()
        EXECUTIONS_LOADED.inc()
        runner.start()
        return runner

    async def retry_execution(self, tenant_id: str, execution_id: str) -> tuple[ExecutionRow, bool]:
        """Re-run a failed (or cancelled) execution, reusing the outputs of succeeded nodes."""
        async with self.sessions() as session:
            row = await repo.get_execution(session, tenant_id, execution_id)
            if row is None:
                raise NotFound(f"execution {execution_id!r} not found")
            if row.status not in ("failed", "cancelled"):
                raise FailedPrecondition(
                    f"execution {execution_id!r} is {row.status}; only failed or cancelled "
                    "executions can be retried"
                )
            previous = {
                node.node_id: node
                for node in await repo.node_runs(session, execution_id)
                # The failure handler runs again if the retry fails too.
                if node.status in ("succeeded", "cached") and node.node_id != ON_FAILURE_NODE_ID
            }
        return await self.start_execution(
            tenant_id=tenant_id,
            workflow_id=row.workflow_id,
            version=row.workflow_version,
            inputs=row.inputs,
            idempotency_key=None,
            parent_execution_id=row.parent_execution_id,
            parent_node_id=row.parent_node_id,
            trigger="retry",
            depth=row.depth,
            retry_of=row.id,
            reused=previous,
            trace_parent=row.trace_parent,
            priority=row.priority,
        )

    # ---- control ------------------------------------------------------------------------

    async def control(
        self, tenant_id: str, execution_id: str, action: Literal["cancel", "pause", "resume"]
    ) -> None:
        runner = await self._runner_for(tenant_id, execution_id, action)
        if runner is None:
            await self._forward(execution_id, "control", {"action": action})
            return
        await runner.control(action)

    async def submit_input(
        self, tenant_id: str, execution_id: str, node_id: str, data: Any
    ) -> None:
        runner = await self._runner_for(tenant_id, execution_id, "submit input to")
        if runner is None:
            async with self.sessions() as session:
                node = await session.get(NodeRunRow, (execution_id, node_id))
            _check_input(
                execution_id, node_id, node.status if node else None, node and node.waiting, data
            )
            await self._forward(execution_id, "input", {"node_id": node_id, "data": data})
            return
        status, waiting = runner.node_status(node_id)
        _check_input(execution_id, node_id, status, waiting, data)
        await runner.submit_input(node_id, data)

    async def _runner_for(
        self, tenant_id: str, execution_id: str, verb: str
    ) -> ExecutionRunner | None:
        """The local runner of an active execution (taking it over if its owner died, or
        reloading it if it is parked here), or None when another live replica drives it."""
        runner = self.runners.get(execution_id)
        if runner is not None:
            if runner.tenant_id != tenant_id:
                raise NotFound(f"execution {execution_id!r} not found")
            return await self._unparked(runner)
        async with self.sessions() as session:
            row = await repo.get_execution(session, tenant_id, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id!r} not found")
        if row.status in FINAL_EXECUTION_STATUSES:
            raise FailedPrecondition(
                f"execution {execution_id!r} is {row.status}; cannot {verb} it"
            )
        return await self._unparked(await self.take_over(execution_id))

    async def _unparked(self, runner: ExecutionRunner | None) -> ExecutionRunner | None:
        """The runner, or its successor when it parked before the caller could hand it a
        message (a runner that parked reads no more messages)."""
        while runner is not None and runner.parked:
            runner = await self.take_over(runner.id)
        return runner

    async def _forward(self, execution_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Hand a request to the replica that owns the execution and wait for its answer."""
        async with self.sessions() as session, session.begin():
            request = ExecutionRequestRow(execution_id=execution_id, kind=kind, payload=payload)
            session.add(request)
        deadline = asyncio.get_running_loop().time() + self.settings.forward_timeout_s
        try:
            while asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
                async with self.sessions() as session:
                    answered = await session.get(ExecutionRequestRow, request.id)
                if answered is not None and answered.done:
                    if answered.error:
                        raise error_from_dict(answered.error)
                    return
            raise Unavailable(
                f"the replica driving execution {execution_id!r} did not answer; try again"
            )
        finally:
            async with self.sessions() as session, session.begin():
                await repo.delete_request(session, request.id)

    async def _apply_requests(self) -> None:
        """Apply requests other replicas received for executions this replica drives."""
        if self._closing or not (self.runners or len(self.parking)):
            return
        if self._writer is not None and not await self._writer.requests_pending(
            self.settings.replica_id
        ):
            return
        async with self.sessions() as session:
            pending = await repo.pending_requests(session, self.settings.replica_id)
        # In order per execution, executions side by side (a parked one is reloaded first:
        # one after the other, a burst of forwarded inputs outlived the forwarders' timeout).
        by_execution: dict[str, list[ExecutionRequestRow]] = {}
        for request in pending:
            by_execution.setdefault(request.execution_id, []).append(request)
        gate = asyncio.Semaphore(16)

        async def apply_in_order(requests: list[ExecutionRequestRow]) -> None:
            async with gate:
                for request in requests:
                    error = await self._apply_request(request)
                    async with self.sessions() as session, session.begin():
                        await repo.answer_request(session, request.id, error)

        await asyncio.gather(*(apply_in_order(group) for group in by_execution.values()))

    async def _apply_request(self, request: ExecutionRequestRow) -> dict[str, Any] | None:
        runner = self.runners.get(request.execution_id)
        try:
            if runner is None and request.execution_id in self.parking:
                runner = await self.parking.unpark(request.execution_id)
            runner = await self._unparked(runner)
            if runner is None:
                raise Unavailable(f"execution {request.execution_id!r} moved; try again")
            payload = request.payload or {}
            if request.kind == "control":
                await runner.control(payload["action"])
            else:
                status, waiting = runner.node_status(payload["node_id"])
                _check_input(
                    request.execution_id, payload["node_id"], status, waiting, payload.get("data")
                )
                await runner.submit_input(payload["node_id"], payload.get("data"))
        except HeddleError as error:
            return error.to_dict()
        return None

    # ---- persistence --------------------------------------------------------------------

    async def persist(self, flush: Flush) -> None:
        """Write one batch in one transaction, fenced on ownership; retried through outages."""
        execution_id = flush.execution_id
        execution_values = dict(flush.execution)
        # The lease loop renews leases every third of their time to live; a write extends
        # its execution's lease only when that renewal looks late. (Extending it on every
        # write changed an indexed column, so each step's fence update could not be a HOT
        # update: new entries in every index of executions, per step.) A final write
        # releases ownership (owner=None), still fenced on the current owner.
        extended = None
        lease_until = self._leases.get(execution_id) or utcnow()
        if "lease_expires_at" not in execution_values and lease_until - utcnow() < (
            dt.timedelta(seconds=self.settings.lease_ttl_s * 2 / 3)
        ):
            extended = execution_values["lease_expires_at"] = self._lease_until()

        nodes: list[dict[str, Any]] = []
        # The PostgreSQL writer appends an agent's journal to the stored one (only the new
        # entries travel and are encoded); the SQLite path writes the checkpoint whole.
        journals: list[int | None] = []
        # A batch ending a chat node appends its turns to the session in its own transaction:
        # the generic path, whose connection both take (rare: a chat turn's end).
        turns = flush.session_turns
        fast = not turns
        for node in flush.nodes:
            if self._writer is not None and fast:
                row, length = node.write_row()
            else:
                row, length = node.row(), None
            nodes.append({"execution_id": execution_id, "node_id": node.node_id, **row})
            journals.append(length)

        # The final write of an execution announces its end in its own transaction (the
        # completion notice's statement of its own, saved).
        notify = (
            CHANNEL
            if self.completions is not None
            and execution_values.get("status") in FINAL_EXECUTION_STATUSES
            else None
        )

        async def write() -> None:
            if fast and self._writer is not None:
                owned = await self._writer.write(
                    execution_id=execution_id,
                    owner=self.settings.replica_id,
                    execution_values=execution_values,
                    nodes=nodes,
                    events=flush.events,
                    trace_id=flush.trace_id,
                    tenant_id=flush.tenant_id,
                    workflow_id=flush.workflow_id,
                    notify=notify,
                )
                if owned and notify is not None:
                    self._announced.add(execution_id)
            elif fast and self._sqlite_writer is not None:
                owned = await self._sqlite_writer.write(
                    execution_id=execution_id,
                    owner=self.settings.replica_id,
                    execution_values=execution_values,
                    nodes=nodes,
                    events=flush.events,
                )
            else:
                owned = await self._write_with_turns(
                    execution_id, execution_values, nodes, flush.events, turns
                )
            if not owned:
                raise LostOwnership(execution_id)

        if flush.insert is not None:
            # A new execution's first batch: its rows with the batch's changes applied,
            # inserted with the batch's events. Not retried: a retry after a lost reply
            # would meet its own row (the start fails; the lease lapses, recovery resumes it).
            # (Never a node's end, so no chat turns: a node ends after its dispatch, which
            # comes after the first batch.)
            assert self._writer is not None and not turns
            written = {node["node_id"]: node for node in nodes}
            inserted = await self._writer.insert_execution(
                {**flush.insert.execution, **execution_values},
                [
                    {**row, **written[row["node_id"]]} if row["node_id"] in written else row
                    for row in flush.insert.nodes
                ],
                flush.events,
                flush.insert.guard,
            )
            if flush.insert.guard is not None and not inserted:
                raise _GuessFailed(execution_id)
        else:
            await self.with_db_retries(write)
        for node, length in zip(flush.nodes, journals, strict=True):
            node.journal_written = length
            node.row_written = True
        if extended is not None and execution_id in self._leases:
            self._leases[execution_id] = extended

    async def _write_with_turns(
        self,
        execution_id: str,
        execution_values: dict[str, Any],
        nodes: list[dict[str, Any]],
        events: list[dict[str, Any]],
        turns: list[tuple[str, list[tuple[str, str]]]],
    ) -> bool:
        """The generic (SQLAlchemy Core) batch write, fenced, with chat turns appended to
        their sessions in the same transaction; False when another replica owns it."""
        async with self.db.begin() as connection:
            owned = await repo.fence_execution(
                connection, execution_id, self.settings.replica_id, execution_values
            )
            if owned:
                await repo.update_node_runs(connection, nodes)
                await repo.delete_journal_appends(
                    connection,
                    execution_id,
                    [node["node_id"] for node in nodes if node.get("checkpoint") is not None],
                )
                await repo.insert_event_rows(connection, events)
                for session_id, messages in turns:
                    await append_messages(connection, session_id, messages, execution_id)
        return owned

    def committed(self, flush: Flush) -> None:
        """Hand a written batch's events to the relay and wake the stream followers. The
        runner calls it after sending the batch's attempts out: woken first, the relay's
        publishing would otherwise sit between the commit and the dispatch of a chain's step.
        """
        if flush.events:
            self.notifier.notify(flush.execution_id)
            if self.relay is not None:
                self.relay.enqueue(flush.events, flush.trace_parent)

    async def with_db_retries(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run operation, retrying transient database errors with backoff for up to a minute."""
        try:
            # The common case pays for no retry machinery (this is on every batch's path).
            return await operation()
        except _TRANSIENT_DB_ERRORS:
            log.warning("database unavailable; retrying with backoff", exc_info=True)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(_TRANSIENT_DB_ERRORS),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            stop=stop_after_delay(60),
            reraise=True,
        ):
            with attempt:
                return await operation()
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- concurrency --------------------------------------------------------------------

    def reserve_slots(self, wanted: int, runner: ExecutionRunner) -> int:
        granted = min(wanted, self._free_slots)
        if self.settings.tenant_fairness and granted:
            granted = min(granted, self._fair_room(runner))
        if granted and self._outranked(runner):
            granted = 0
        if granted < wanted:
            self._wanting.add(runner)
        else:
            self._wanting.discard(runner)
        self._free_slots -= granted
        if granted < wanted:
            self._starved.add(runner)
        return granted

    def _outranked(self, runner: ExecutionRunner) -> bool:
        """Whether a higher-priority execution waits for slots that it could take now (ready
        nodes, not held back by the fairness rule): the slots go to it first."""
        higher = [
            other
            for other in self._wanting.above(runner.priority)
            if other is not runner and other.core.room > 0
        ]
        if not higher:
            return False
        if not self.settings.tenant_fairness:
            return True
        return any(self._fair_room(other) > 0 for other in higher)

    def _fair_room(self, runner: ExecutionRunner) -> int:
        """Slots the runner's tenant may still take while other tenants wait for slots: its
        equal share of the replica's, less what its executions hold. Work-conserving: with
        no other tenant waiting there is no cap, so one tenant alone uses every slot."""
        tenant = runner.tenant_id
        waiting = self._wanting.other_tenants(tenant)
        if not waiting:
            return self.settings.max_concurrency_global
        share = max(1, self.settings.max_concurrency_global // (waiting + 1))
        held = sum(r.core.in_flight for r in self.runners.values() if r.tenant_id == tenant)
        return max(0, share - held)

    def release_slots(self, count: int) -> None:
        if count <= 0:
            return
        self._free_slots += count
        while self._starved and self._free_slots > 0:
            # The highest priority first (the longest waiting among equals).
            self._starved.pop_highest().wake()

    # ---- secrets and cache ----------------------------------------------------------------

    async def resolve_secrets(self, tenant_id: str, names: set[str] | None) -> dict[str, str]:
        return await self.secrets.resolve(tenant_id, names)

    async def cache_get(self, scope: CacheScope, key: str) -> bytes | None:
        return await self.result_cache.get(scope, key)

    async def cache_set(
        self, scope: CacheScope, key: str, value: bytes, ttl_s: float | None
    ) -> None:
        await self.result_cache.set(scope, key, value, ttl_s)

    # ---- ownership ----------------------------------------------------------------------

    def _lease_until(self) -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=self.settings.lease_ttl_s)

    def runner_finished(self, runner: ExecutionRunner) -> None:
        announced = runner.id in self._announced  # by its final write
        self._announced.discard(runner.id)
        if self.runners.get(runner.id) is runner:
            del self.runners[runner.id]
            self._leases.pop(runner.id, None)
            EXECUTIONS_LOADED.dec()
            if runner.parked and not self._closing:
                # Not ended: unloaded while it waits; still owned (its lease is renewed).
                self.parking.park(runner)
        self._starved.discard(runner)
        self._wanting.discard(runner)
        if runner.parked:
            return
        self.notifier.notify(runner.id)
        if self.completions is not None and not announced:
            self.completions.announce(runner.id)

    async def runner_crashed(
        self, execution_id: str, error: BaseException, redactions: list[str] | None = None
    ) -> None:
        """The poison-execution guard: count a crash of an execution's runner (or takeover)
        durably; below the limit, release the execution at once so that a replica resumes it
        from the database; at the limit, fail it with the error (recorded and evented)."""
        if isinstance(error, _TRANSIENT_DB_ERRORS):
            # An outage that outlasted the retries is not the execution's fault (nor could it
            # be recorded): its lease lapses and a replica resumes it when the database is back.
            return
        message = redact(f"{type(error).__name__}: {error}", redactions or [])
        limit = self.settings.max_runner_crashes
        owner = self.settings.replica_id
        try:
            async with self.db.begin() as connection:
                crashes = await repo.record_crash(connection, execution_id, owner)
                if crashes is None:
                    return
                if crashes < limit:
                    await repo.release_execution(connection, execution_id, owner)
                    failed = None
                else:
                    failure = {
                        "type": "ExecutionCrashed",
                        "message": f"the execution crashed {crashes} times (limit "
                        f"HEDDLE_MAX_RUNNER_CRASHES={limit}); last error: {message}",
                        "details": {"crashes": crashes, "last_error": message},
                    }
                    failed = await repo.fail_execution(
                        connection, execution_id, owner, failure, utcnow()
                    )
        except Exception:
            log.exception("recording a crash failed", extra={"execution_id": execution_id})
            return
        if failed is None:
            log.warning(
                "execution released after a crash",
                extra={"execution_id": execution_id, "crashes": crashes},
            )
            return
        log.error(
            "execution failed: it crashed too often",
            extra={"execution_id": execution_id, "crashes": crashes},
        )
        EXECUTIONS.labels("failed").inc()
        self.notifier.notify(execution_id)
        if self.completions is not None:
            self.completions.announce(execution_id)
        if self.relay is not None:
            event, trace_parent = failed
            self.relay.enqueue([event], trace_parent)

    async def take_over(self, execution_id: str) -> ExecutionRunner | None:
        """Claim an execution whose lease lapsed and resume it from the database (or reload
        one this replica parked)."""
        if execution_id in self.runners:
            return self.runners[execution_id]
        if execution_id in self.parking:
            return await self.parking.unpark(execution_id)
        return await self._claim_and_resume(execution_id)

    async def _claim_and_resume(self, execution_id: str) -> ExecutionRunner | None:
        async with self.sessions() as session, session.begin():
            claimed = await repo.claim_execution(
                session, execution_id, self.settings.replica_id, self._lease_until()
            )
        if not claimed or execution_id in self.runners:
            return self.runners.get(execution_id)
        try:
            return await self._resume(execution_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # A takeover that cannot even start (its definition no longer compiles, say)
            # counts as a crash, or every replica would claim and fail it forever.
            log.exception("takeover failed", extra={"execution_id": execution_id})
            await self.runner_crashed(execution_id, error)
            return None

    async def _resume(self, execution_id: str) -> ExecutionRunner | None:
        async with self.sessions() as session:
            row = await session.get(ExecutionRow, execution_id)
            if row is None or row.status not in ACTIVE_EXECUTION_STATUSES:
                return None
            version = await repo.get_version(session, row.workflow_id, row.workflow_version)
            node_rows = await repo.node_runs(session, execution_id)
        if version is None:
            return None
        compiled = await self.compiled(
            row.workflow_id, row.workflow_version, version.definition, row.tenant_id
        )
        nodes = {node.node_id: NodeState.from_row(node) for node in node_rows}
        log.info("took over execution", extra={"execution_id": execution_id})
        return self._launch(row, compiled, nodes)

    async def _recover_orphans(self) -> None:
        """Take over the executions whose lease lapsed (their replica died)."""
        if self._closing:
            return
        if self._writer is not None:
            orphaned: Sequence[str] = await self._writer.orphaned_executions(
                repo.ACTIVE_STATUSES, utcnow()
            )
        else:
            async with self.sessions() as session:
                orphaned = await repo.orphaned_executions(session)
        for execution_id in orphaned:
            if execution_id not in self.runners:
                await self.take_over(execution_id)

    async def _renew_leases(self) -> None:
        """Renew the leases of what this replica drives; stop driving what it lost."""
        # A started execution whose first batch is not written yet has no row to renew
        # (its rows go in with that batch): not a lost lease.
        owned = [
            *(eid for eid, runner in self.runners.items() if runner.unwritten is None),
            *self.parking.ids(),
        ]
        if self._closing or not owned:
            return
        until = self._lease_until()
        held: set[str] = set()
        if self._writer is not None:
            # The ids as one array parameter: any number in one statement.
            held = await self._writer.renew_leases(self.settings.replica_id, owned, until)
        else:
            async with self.sessions() as session, session.begin():
                # In chunks: tens of thousands of parked ids are more parameters than one
                # statement may have.
                for start in range(0, len(owned), _LEASE_CHUNK):
                    chunk = owned[start : start + _LEASE_CHUNK]
                    held |= await repo.renew_leases(session, self.settings.replica_id, chunk, until)
        for execution_id in held:
            if execution_id in self._leases:
                self._leases[execution_id] = until
        for execution_id in set(owned) - held:
            self.parking.forget(execution_id)
            runner = self.runners.get(execution_id)
            if (
                runner is not None
                and runner.task is not None
                and runner.status not in (FINAL_EXECUTION_STATUSES)
            ):
                log.warning("lost lease", extra={"execution_id": execution_id})
                runner.task.cancel()


@dataclasses.dataclass(frozen=True, slots=True)
class _Start:
    """What a start was asked (Engine.start_execution's arguments)."""

    tenant_id: str
    workflow_id: str
    version: int
    inputs: Any
    idempotency_key: str | None
    parent_execution_id: str | None
    parent_node_id: str | None
    trigger: str
    depth: int
    retry_of: str | None
    reused: dict[str, NodeRunRow] | None
    trace_parent: str
    priority: int
    forked_from: tuple[str, str] | None
    #: The id the caller chose (a UUID), or None: one is made.
    execution_id: str | None = None


def _same_start(start: _Start, taken: ExecutionRow) -> ExecutionRow:
    """The execution a start's chosen id names, when it is this tenant's run of this
    workflow; Conflict otherwise, saying nothing of it (whose it is, what it runs)."""
    if taken.tenant_id != start.tenant_id or taken.workflow_id != start.workflow_id:
        raise Conflict(
            f"execution_id {start.execution_id!r} is taken by another execution: choose a "
            "new one (a uuid4) for a new start"
        )
    return taken


class _GuessFailed(Exception):
    """A start's guard did not hold (a newer version, the workflow deleted, the quota
    reached): nothing was inserted; the start is made again with the lookup."""


def _quota_exceeded(limit: int) -> NoReturn:
    raise ResourceExhausted(
        f"tenant quota: at most {limit} concurrent executions",
        {"quota": "max_concurrent_executions", "limit": limit},
    )


def _check_input(
    execution_id: str, node_id: str, status: str | None, waiting: Any, data: Any
) -> None:
    """Refuse input for a node that is not waiting, or that does not fit its schema."""
    if status is None:
        raise NotFound(f"execution {execution_id!r} has no node {node_id!r}")
    if status != "waiting":
        raise FailedPrecondition(f"node {node_id!r} is {status}, not waiting for input")
    problems = validate_human_input((waiting or {}).get("schema"), data)
    if problems:
        raise InvalidArgument(f"input for node {node_id!r} does not match its schema", problems)
