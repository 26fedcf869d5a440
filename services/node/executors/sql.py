"""The sql node: one parameterised statement against PostgreSQL or MySQL/MariaDB.

The connection URL comes from a param that names a tenant secret (``{{ secrets.WAREHOUSE }}``):
the workflow service resolves it into the attempt's context and the node service redacts its
value from everything the attempt returns. This module never logs it and never puts it in an
error: a bad URL is reported by its scheme only.

Values reach the database only as bound parameters (``:name`` in the SQL text, ``parameters``
beside it); the SQL text itself is never rendered, and a ``{{ }}`` in it is refused both at
validation (services/workflow/validation.py) and here.

Each statement runs in its own transaction, read-only unless the node sets ``write: true``,
under a server-side statement timeout, and returns at most ``max_rows`` rows (read through a
server-side cursor, so a large table is not loaded to find that out).

Large results go to the artifact store: when the rows read so far pass the claim-check
threshold (HEDDLE_CLAIM_CHECK_BYTES), or the node sets ``as_artifact``, the rows are streamed
from the cursor into an artifact as JSON Lines (one row object per line: the same objects as
``rows``, with JSON's types — numbers, nulls, nested JSON — which CSV would flatten to text;
and a downstream reader can stream it line by line), and the output carries
``rows_ref`` (``{"$ref", "size", "sha256", "content_type"}``) instead of ``rows``. The replica
holds at most one threshold's worth of rows at a time.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from libs.common import jsonutil
from libs.common.artifacts import CHUNK_BYTES, ArtifactStore, new_key
from libs.common.claimcheck import tenant_segment
from libs.common.netguard import ForbiddenAddressError, check_url_allowed_async
from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeError,
    NodeRequest,
    NodeResult,
    NodeSettings,
    Services,
    object_schema,
)

#: URL schemes accepted, by the async driver they are run with. Nothing else (no sqlite: a
#: file on the node replica is not a tenant's database).
_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mysql+asyncmy",
    "mysql+asyncmy": "mysql+asyncmy",
    "mariadb+asyncmy": "mysql+asyncmy",
}
DEFAULT_MAX_ROWS = 1000
_DEFAULT_PORTS = {"postgresql+asyncpg": 5432, "mysql+asyncmy": 3306}
#: PostgreSQL's query_canceled, MariaDB's max_statement_time exceeded, MySQL's
#: max_execution_time exceeded.
_DRIVER_MODULES = frozenset({"asyncpg", "asyncmy", "pymysql"})
_TIMEOUT_CODES = {"57014", "1969", "3024"}
JSON_LINES = "application/x-ndjson"


def templated_sql_problem(query: Any) -> str | None:
    """Why a sql node's query is refused before it runs (a template in it), or None."""
    if isinstance(query, str) and ("{{" in query or "{%" in query):
        return (
            "the SQL text may not contain templates ({{ }} or {% %}): pass values as bound "
            "parameters (`:name` in the query, `parameters: {name: '{{ ... }}'}`)"
        )
    return None


def json_safe(value: Any) -> Any:
    """A database value as JSON: exact decimals that a float cannot hold stay strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if decimal.Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(item) for item in value]
    return str(value)


class EnginePool:
    """One SQLAlchemy engine (a small connection pool) per database URL, the least recently
    used closed beyond ``max_engines``."""

    def __init__(self) -> None:
        self._engines: OrderedDict[str, AsyncEngine] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, url: URL, settings: NodeSettings) -> AsyncEngine:
        key = url.render_as_string(hide_password=False)
        engine = self._engines.get(key)
        if engine is not None:
            self._engines.move_to_end(key)
            return engine
        engine = create_async_engine(
            url,
            pool_size=settings.sql_pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            pool_recycle=1800,
            # Never echo statements: their parameters may be sensitive.
            echo=False,
            hide_parameters=True,
        )
        self._engines[key] = engine
        while len(self._engines) > settings.sql_max_engines:
            _, oldest = self._engines.popitem(last=False)
            task = asyncio.get_running_loop().create_task(oldest.dispose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return engine

    def __len__(self) -> int:
        return len(self._engines)

    async def close(self) -> None:
        engines = list(self._engines.values())
        self._engines.clear()
        await asyncio.gather(*(engine.dispose() for engine in engines), *self._closing)


def _connection_error(message: str) -> NodeError:
    return NodeError(
        "SqlConnectionError", f"param 'connection': {message}", details={"param": "connection"}
    )


def database_url(connection: Any) -> URL:
    """The async-driver URL of the connection param; errors name the scheme, never the URL."""
    if not isinstance(connection, str) or not connection.strip():
        raise _connection_error("a database URL is required (e.g. {{ secrets.DATABASE_URL }})")
    try:
        url = make_url(connection.strip())
    except ArgumentError:
        raise _connection_error(
            "not a database URL (postgresql://user:password@host:port/db or mysql://...)"
        ) from None
    driver = _DRIVERS.get(url.drivername.lower())
    if driver is None:
        raise _connection_error(
            f"unsupported database '{url.drivername}': use postgresql:// or mysql:// (MariaDB too)"
        )
    if not url.host:
        raise _connection_error("the database URL names no host")
    return url.set(drivername=driver)


def _driver_error(error: BaseException) -> BaseException | None:
    """The driver's exception behind ``error``: SQLAlchemy wraps most in a DBAPIError, but
    one raised while a streamed result opens (asyncpg) comes through unwrapped."""
    if isinstance(error, DBAPIError):
        return error.orig
    if type(error).__module__.split(".", 1)[0] in _DRIVER_MODULES:
        return error
    return None


def _sqlstate(orig: BaseException) -> str:
    """PostgreSQL's SQLSTATE, or MySQL's error number (more precise than its SQLSTATE)."""
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # MySQL drivers: (errno, message)
        return str(args[0])
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return ""


def _database_message(orig: BaseException) -> str:
    cause = getattr(orig, "__cause__", None)
    source = cause if cause is not None and type(cause).__module__.startswith("asyncpg") else orig
    args: tuple[Any, ...] = tuple(getattr(source, "args", ()))
    if len(args) == 2 and isinstance(args[0], int):  # MySQL: (1064, "You have an error ...")
        return f"{args[1]} (error {args[0]})"
    message = str(source).strip()
    if message.startswith("<class"):  # SQLAlchemy's asyncpg adapter: "<class '...'>: text"
        message = message.split(">: ", 1)[-1]
    position = getattr(source, "position", None)
    if position:
        message = f"{message} (at character {position} of the query)"
    return message


class SqlExecutor(Executor):
    spec = NodeTypeSpec(
        type="sql",
        title="SQL query",
        description="Runs one parameterised statement against PostgreSQL or MySQL/MariaDB; "
        "the rows become the output. Read-only unless write is set.",
        category="integration",
        params_schema=object_schema(
            {
                "connection": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Database URL, from a secret: {{ secrets.DATABASE_URL }} "
                    "(postgresql://user:password@host:5432/db or mysql://... for MariaDB).",
                },
                "query": {
                    "type": "string",
                    "minLength": 1,
                    "description": "One SQL statement; values as bound parameters :name "
                    "(never templates).",
                    "x-multiline": True,
                },
                "parameters": {
                    "type": "object",
                    "default": {},
                    "description": "Values of the query's :name parameters (templated).",
                },
                "write": {
                    "type": "boolean",
                    "default": False,
                    "description": "Allow writes (INSERT, UPDATE, DDL...); otherwise the "
                    "statement runs in a read-only transaction.",
                },
                "max_rows": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Most rows returned (default 1000, or the replica's "
                    "limit HEDDLE_SQL_MAX_ROWS if lower); more are reported as truncated.",
                },
                "timeout_s": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Statement timeout enforced by the database server.",
                },
                "as_artifact": {
                    "type": "boolean",
                    "default": False,
                    "description": "Stream the rows to the artifact store (JSON Lines) and "
                    "output rows_ref, however few; max_rows then defaults to the replica's "
                    "limit. Without it, rows past the claim-check threshold go there too.",
                },
            },
            required=["connection", "query"],
        ),
        output_schema={
            "type": "object",
            "properties": {
                "rows": {"type": "array", "items": {"type": "object"}},
                "rows_ref": {
                    "type": "object",
                    "description": "The rows as a JSON Lines artifact, when large.",
                },
                "columns": {"type": "array", "items": {"type": "string"}},
                "row_count": {"type": "integer"},
                "truncated": {"type": "boolean"},
                "affected_rows": {"type": ["integer", "null"]},
            },
        },
    )
    raw_params = ("query",)

    def __init__(self) -> None:
        self.engines = EnginePool()

    async def close(self) -> None:
        await self.engines.close()

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        query = params["query"]
        problem = templated_sql_problem(query)
        if problem is not None:
            raise NodeError(
                "ValidationError", f"param 'query': {problem}", details={"param": "query"}
            )
        settings = services.settings
        as_artifact = bool(params.get("as_artifact"))
        if as_artifact and services.artifacts is None:
            raise NodeError(
                "ValidationError",
                "param 'as_artifact': this node replica has no artifact store",
                details={"param": "as_artifact"},
            )
        default_rows = settings.sql_max_rows if as_artifact else DEFAULT_MAX_ROWS
        max_rows = params.get("max_rows") or min(default_rows, settings.sql_max_rows)
        if max_rows > settings.sql_max_rows:
            raise NodeError(
                "ValidationError",
                f"param 'max_rows': {max_rows} is above the limit of "
                f"{settings.sql_max_rows} (HEDDLE_SQL_MAX_ROWS)",
                details={"param": "max_rows"},
            )
        url = database_url(params["connection"])
        await self._check_address(url, settings.http_allow_hosts)
        timeout_s = float(params.get("timeout_s") or settings.sql_default_timeout_s)
        engine = self.engines.get(url, settings)
        try:
            # The server enforces timeout_s; this bound only covers a server that does not
            # answer at all (connecting included).
            async with asyncio.timeout(timeout_s + 10):
                spill = (
                    _Spill(
                        services.artifacts,
                        request.tenant_id,
                        None if as_artifact else settings.claim_check_bytes,
                    )
                    if services.artifacts is not None
                    else None
                )
                output = await self._execute(engine, query, params, max_rows, timeout_s, spill)
        except TimeoutError:
            raise NodeError(
                "SqlTimeoutError",
                f"the database did not answer within {timeout_s:g}s",
                retryable=True,
            ) from None
        except Exception as exc:
            driver_error = _driver_error(exc)
            if driver_error is not None:
                invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
                raise self._error(driver_error, invalidated, timeout_s, url) from None
            if isinstance(exc, TypeError | ValueError):  # a URL option the driver refuses
                raise _connection_error(
                    f"the database URL's options are not understood: {_scrub(str(exc), url)}"
                ) from None
            if not isinstance(exc, SQLAlchemyError | OSError):
                raise
            raise NodeError(
                "SqlConnectionError",
                f"cannot reach the database: {type(exc).__name__}: {_scrub(str(exc), url)}",
                retryable=True,
            ) from None
        return NodeResult(output=output)

    @staticmethod
    async def _check_address(url: URL, allow: list[str]) -> None:
        host = url.host or ""
        port = url.port or _DEFAULT_PORTS[url.drivername]
        shown = f"[{host}]" if ":" in host else host
        try:
            await check_url_allowed_async(f"http://{shown}:{port}/", allow)
        except ForbiddenAddressError as exc:
            raise _connection_error(str(exc)) from None
        except OSError as exc:
            raise NodeError(
                "SqlConnectionError",
                f"cannot resolve the database host '{host}': {exc}",
                retryable=True,
            ) from None

    async def _execute(
        self,
        engine: AsyncEngine,
        query: str,
        params: dict[str, Any],
        max_rows: int,
        timeout_s: float,
        spill: _Spill | None = None,
    ) -> dict[str, Any]:
        write = bool(params["write"])
        statement = text(query)
        async with engine.connect() as conn, conn.begin():
            await _prepare_transaction(conn, write=write, timeout_s=timeout_s)
            if write:
                result = await conn.execute(statement, params["parameters"])
                affected = result.rowcount if result.rowcount >= 0 else None
                if not result.returns_rows:
                    return {
                        "rows": [],
                        "columns": [],
                        "row_count": 0,
                        "truncated": False,
                        "affected_rows": affected,
                    }
                columns = list(result.keys())
                fetched = result.fetchmany(max_rows + 1)
            else:
                streamed = await conn.stream(statement, params["parameters"])
                columns = list(streamed.keys())
                if spill is not None:
                    output = await spill.read(streamed, columns, max_rows)
                    await streamed.close()
                    if output is not None:
                        return output
                    fetched = spill.rows
                else:
                    fetched = await streamed.fetchmany(max_rows + 1)
                    await streamed.close()
                affected = None
        truncated = len(fetched) > max_rows
        rows = [
            {column: json_safe(value) for column, value in zip(columns, row, strict=True)}
            for row in fetched[:max_rows]
        ]
        return {
            "rows": rows,
            "columns": columns,
            "row_count": len(rows),
            "truncated": truncated,
            "affected_rows": affected,
        }

    @staticmethod
    def _error(orig: BaseException, invalidated: bool, timeout_s: float, url: URL) -> NodeError:
        code = _sqlstate(orig)
        message = _scrub(_database_message(orig), url)
        if code in _TIMEOUT_CODES:
            return NodeError(
                "SqlTimeoutError",
                f"the statement ran longer than its timeout of {timeout_s:g}s: {message}",
                details={"code": code, "timeout_s": timeout_s},
            )
        if invalidated or isinstance(orig, OSError):
            return NodeError(
                "SqlConnectionError", f"lost the database connection: {message}", retryable=True
            )
        return NodeError("SqlError", message, details={"code": code, "param": "query"})


class _Spill:
    """Reads a streamed result: inline rows while they stay under the threshold (None:
    none inline), else every row streamed to an artifact as JSON Lines."""

    def __init__(self, store: ArtifactStore, tenant_id: str, threshold: int | None) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.threshold = threshold
        #: The rows read, when they all stayed inline (raw, as fetchmany gives them).
        self.rows: list[Any] = []

    async def read(self, streamed: Any, columns: list[str], max_rows: int) -> dict[str, Any] | None:
        """The output by reference, or None when the rows (in `rows`, at most max_rows + 1
        to tell truncation) stayed under the threshold."""
        rows = aiter(streamed)
        lines: list[bytes] = []
        size = 0
        if self.threshold is not None:
            while len(self.rows) <= max_rows:
                row = await anext(rows, None)
                if row is None:
                    return None
                self.rows.append(row)
                if len(self.rows) <= max_rows:
                    line = _json_line(columns, row)
                    lines.append(line)
                    size += len(line)
                    if size > self.threshold:
                        break
            else:
                return None  # max_rows + 1 read, all small: inline and truncated
        count = len(lines)
        truncated = False

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal count, truncated
            buffer = bytearray(b"".join(lines))
            lines.clear()
            self.rows.clear()
            async for row in rows:
                if count == max_rows:
                    truncated = True
                    break
                buffer += _json_line(columns, row)
                count += 1
                if len(buffer) >= CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
            if buffer:
                yield bytes(buffer)

        key = new_key(f"values/{tenant_segment(self.tenant_id)}/sql")
        ref = await self.store.put_stream(key, chunks(), content_type=JSON_LINES)
        return {
            "rows_ref": ref.to_json(),
            "columns": columns,
            "row_count": count,
            "truncated": truncated,
            "affected_rows": None,
        }


def _json_line(columns: list[str], row: Any) -> bytes:
    return (
        jsonutil.dumps(
            {column: json_safe(value) for column, value in zip(columns, row, strict=True)}
        )
        + b"\n"
    )


async def _prepare_transaction(conn: AsyncConnection, *, write: bool, timeout_s: float) -> None:
    milliseconds = max(1, int(timeout_s * 1000))
    if conn.dialect.name == "postgresql":
        if not write:
            await conn.execute(text("SET TRANSACTION READ ONLY"))
        # SET takes no bound parameters; the value is an int formatted here.
        await conn.execute(text(f"SET LOCAL statement_timeout = {milliseconds}"))
        return
    if getattr(conn.dialect, "is_mariadb", False):
        await conn.execute(text(f"SET SESSION max_statement_time = {milliseconds / 1000:.3f}"))
    else:  # MySQL bounds SELECTs only
        await conn.execute(text(f"SET SESSION max_execution_time = {milliseconds}"))
    if not write:
        # Applies to the transaction the next statement starts.
        await conn.execute(text("SET TRANSACTION READ ONLY"))


def _scrub(message: str, url: URL) -> str:
    """Remove the URL and its password from a driver's message (defence in depth: the node
    service redacts secret values from outcomes as well)."""
    for secret in (
        url.render_as_string(hide_password=False),
        str(url.password or ""),
    ):
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    return message
