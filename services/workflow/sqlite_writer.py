"""The hot-path state write on SQLite: one batch of a runner in one hop to a writer thread.

Through SQLAlchemy on aiosqlite a batch (BEGIN, the fenced execution update, the node rows,
the events, COMMIT) is five or more trips to aiosqlite's thread, each compiled and bound by
SQLAlchemy on the event loop and woken back through it; a chain of nodes writes once per
step. Here the batch is one function run on a thread of its own, on a connection of its own
(WAL lets it write beside the pool's connections; busy_timeout waits for a writer there):
one transaction, one hop. The values are bound with the columns' own SQLAlchemy bind
processors for this dialect, so the rows are byte for byte those the Core path writes
(tests/workflow/test_sqlite_writer.py compares them); readers go through SQLAlchemy as
before. Only a file database gets this writer: `:memory:` is private to each connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from libs.common.db import utcnow
from services.workflow.models import EventRow, ExecutionRow, NodeRunRow, OutboxRow
from services.workflow.repository import outbox_rows

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncEngine

_EXECUTIONS = cast(Table, ExecutionRow.__table__)
_NODE_RUNS = cast(Table, NodeRunRow.__table__)
_EVENTS = cast(Table, EventRow.__table__)
_OUTBOX = cast(Table, OutboxRow.__table__)
_EVENT_COLUMNS = tuple(column.name for column in _EVENTS.columns)

Processor = Callable[[Any], Any]


def file_database(engine: AsyncEngine) -> str | None:
    """The path of engine's SQLite file, None when it is not a plain file database."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query:
        return None
    return database


@lru_cache(maxsize=64)
def _update_sql(table: str, columns: tuple[str, ...], keys: tuple[str, ...]) -> str:
    assignments = ", ".join(f'"{column}" = ?' for column in columns)
    where = " AND ".join(f'"{key}" = ?' for key in keys)
    return f'UPDATE "{table}" SET {assignments} WHERE {where}'


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    names = ", ".join(f'"{column}"' for column in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" for _ in columns)})'


_INSERT_EVENTS = _insert_sql("execution_events", _EVENT_COLUMNS)
_OWNED = "SELECT 1 FROM executions WHERE id = ? AND owner = ?"
_OUTBOX_COLUMNS = ("execution_id", "low_seq", "high_seq", "created_at")
_INSERT_OUTBOX = _insert_sql("event_outbox", _OUTBOX_COLUMNS)


def _processors(table: Table, dialect: Dialect) -> dict[str, Processor | None]:
    return {
        column.name: column.type.dialect_impl(dialect).bind_processor(dialect)
        for column in table.columns
    }


def _defaults(table: Table) -> dict[str, Any]:
    """The scalar Python-side defaults SQLAlchemy would fill in for a missing column."""
    return {
        column.name: column.default.arg
        for column in table.columns
        if isinstance(column.default, ScalarElementColumnDefault)
    }


class SQLiteBatchWriter:
    """A connection and a thread reserved for the runners' batch writes on a SQLite file."""

    def __init__(self, engine: AsyncEngine, path: str) -> None:
        self._path = path
        dialect = engine.dialect
        self._execution = _processors(_EXECUTIONS, dialect)
        self._node = _processors(_NODE_RUNS, dialect)
        self._event = _processors(_EVENTS, dialect)
        self._event_defaults = _defaults(_EVENTS)
        self._outbox = _processors(_OUTBOX, dialect)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._connection: sqlite3.Connection | None = None  # opened on the thread

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def write(
        self,
        *,
        execution_id: str,
        owner: str,
        execution_values: dict[str, Any],
        nodes: list[dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> bool:
        """Write one batch in one transaction; False (nothing written) when owner no longer
        holds the execution. Driver errors come back as SQLAlchemy's, as on the Core path."""
        # Bound here, on the loop (the thread only runs statements): values as SQLAlchemy
        # would send them.
        columns = tuple(sorted(execution_values))
        fence_sql = _update_sql("executions", columns, ("id", "owner")) if columns else _OWNED
        fence = [_bind(self._execution, column, execution_values[column]) for column in columns]
        fence += [execution_id, owner]
        by_shape: dict[tuple[str, ...], list[list[Any]]] = {}
        for node in nodes:
            shape = tuple(sorted(k for k in node if k not in ("execution_id", "node_id")))
            params = [_bind(self._node, column, node[column]) for column in shape]
            params += [node["execution_id"], node["node_id"]]
            by_shape.setdefault(shape, []).append(params)
        updates = [
            (_update_sql("node_runs", shape, ("execution_id", "node_id")), rows)
            for shape, rows in by_shape.items()
        ]
        defaults = self._event_defaults
        rows = [
            [
                _bind(self._event, column, event.get(column, defaults.get(column)))
                for column in _EVENT_COLUMNS
            ]
            for event in events
        ]
        # The batch's outbox row (the relay deletes it once the broker confirmed the events).
        outbox = [
            [_bind(self._outbox, column, row[column]) for column in _OUTBOX_COLUMNS]
            for row in outbox_rows(events, utcnow())
        ]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._thread, self._write, fence_sql, fence, updates, rows, outbox
        )

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "busy_timeout=30000",
            "foreign_keys=ON",
        ):
            connection.execute(f"PRAGMA {pragma}")
        return connection

    def _write(
        self,
        fence_sql: str,
        fence: list[Any],
        updates: list[tuple[str, list[list[Any]]]],
        events: list[list[Any]],
        outbox: list[list[Any]],
    ) -> bool:
        try:
            if self._connection is None:
                self._connection = self._open()
            connection = self._connection
            # IMMEDIATE: the write lock is taken (or waited for) at BEGIN, not on the first
            # write after a read, which SQLite cannot wait for.
            connection.execute("BEGIN IMMEDIATE")
            try:
                cursor = connection.execute(fence_sql, fence)
                owned = cursor.rowcount > 0 if fence_sql is not _OWNED else bool(cursor.fetchone())
                if owned:
                    for sql, params in updates:
                        connection.executemany(sql, params)
                    if events:
                        connection.executemany(_INSERT_EVENTS, events)
                        connection.executemany(_INSERT_OUTBOX, outbox)
                    connection.execute("COMMIT")
                else:
                    connection.execute("ROLLBACK")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as error:
            raise IntegrityError("write_batch", None, error) from error
        except sqlite3.Error as error:
            # Its state is unknown (locked out, a disk error): the next write reconnects.
            self._close()
            raise OperationalError("write_batch", None, error) from error
        return owned


def _bind(processors: dict[str, Processor | None], column: str, value: Any) -> Any:
    processor = processors[column]
    return value if processor is None else processor(value)
