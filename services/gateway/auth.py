"""Authentication (API keys and JWT bearer tokens), authorization (roles, scopes), per-key
rate limits and the audit trail of the gateway.

API keys look like `hk_<prefix>_<secret>`: the prefix (12 hex digits) is stored in clear and
finds the row; the secret (32 random bytes) is stored as HMAC-SHA-256(pepper, secret). A slow
hash (scrypt, bcrypt) protects low-entropy passwords from offline guessing; a 256-bit random
secret cannot be guessed, so a slow hash would only cost CPU on every request (and hand out a
denial-of-service lever) for no gain, while the pepper — which lives in settings, not in the
database — means a leaked table alone cannot even test a guess. The comparison is constant
time.

Verified keys are remembered for a short while (HEDDLE_API_KEY_CACHE_TTL_S), so a request
needs no database read to authenticate. The stores behind authentication may be down: the
database is then a 503 naming it; Redis (rate limits) fails open or closed as configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import math
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from libs.common.apikeys import API_KEY_PREFIX, hash_secret, new_api_key, parse_api_key
from libs.common.db import create_engine, session_factory, utcnow
from libs.common.errors import (
    FailedPrecondition,
    HeddleError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from libs.common.kv import KV, MemoryKV
from services.gateway import repository as repo
from services.gateway.audit_buffer import AuditBuffer
from services.gateway.errors import dependency_unavailable, unavailable
from services.gateway.models import ApiKeyRow, AuditRow, RoleGrantRow
from services.gateway.rate_allowance import RateAllowances
from services.gateway.roles import (
    ACTION_SCOPES,
    ROLES,
    SCOPES,
    TENANT_ACTIONS,
    WorkflowAction,
    role_allows,
)
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
DEFAULT_SCOPES: tuple[str, ...] = ("read", "write", "execute")
ADMIN_SCOPES: tuple[str, ...] = SCOPES
#: last_used_at is written at most this often per key (not one write per request).
TOUCH_INTERVAL = dt.timedelta(seconds=60)
#: After a failed rate-limit check, the store is asked again only after this long: requests
#: meanwhile do not each wait for a connection attempt.
RATE_STORE_RECHECK_S = 1.0
#: Seconds a replica may spend rate-limit tokens it took from the shared bucket.
RATE_ALLOWANCE_TTL_S = 1.0

RATE_LIMIT_UNCHECKED = Counter(
    "heddle_gateway_rate_limit_unchecked",
    "Requests the gateway could not rate-limit because the rate-limit store (Redis) was "
    "unreachable, by outcome: served (failure mode open) or refused with 503 (closed).",
    ["outcome"],
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: `key:<id>` (API key), `user:<sub>` (JWT) or `anonymous` (auth off)."""

    id: str
    tenant_id: str
    admin: bool
    scopes: frozenset[str]
    kind: Literal["api_key", "jwt", "anonymous"]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal(
    id="anonymous",
    tenant_id=DEFAULT_TENANT,
    admin=True,
    scopes=frozenset(ADMIN_SCOPES),
    kind="anonymous",
)


def unauthenticated(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="heddle"'})


class GatewayDatabase:
    """The gateway's engine, created and migrated on first use (tests that never touch a
    gateway-owned table never open a database).

    The migration runs in a task of its own that callers await shielded: a caller's deadline
    (a /readyz check has one second) or cancellation does not cancel it midway (on SQLite,
    DDL is not transactional: a migration cut short would leave its tables half made)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._opening: asyncio.Future[None] | None = None

    async def sessions(self) -> async_sessionmaker[AsyncSession]:
        if self._sessions is None:
            if self._opening is None:
                self._opening = asyncio.ensure_future(self._open())
                self._opening.add_done_callback(self._opened)
            await asyncio.shield(self._opening)
        assert self._sessions is not None
        return self._sessions

    async def _open(self) -> None:
        from libs.migrations import upgrade

        engine = create_engine(self.url)
        try:
            await upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        self._engine = engine
        self._sessions = session_factory(engine)

    def _opened(self, opening: asyncio.Future[None]) -> None:
        # A failed opening is tried again by the next caller (its error reached the callers
        # that awaited it; retrieved here for the case that every one of them was cancelled).
        if opening.cancelled() or opening.exception() is not None:
            self._opening = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session; an unreachable database raises Unavailable (503) naming it."""
        with _database_errors():
            sessions = await self.sessions()
            async with sessions() as session:
                yield session

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed at the end (Unavailable as session())."""
        with _database_errors():
            sessions = await self.sessions()
            async with sessions() as session, session.begin():
                yield session

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection on which each statement commits by itself: a one-statement write
        is one round trip instead of three (BEGIN, the statement, COMMIT)."""
        with _database_errors():
            await self.sessions()
            assert self._engine is not None
            async with self._engine.connect() as connection:
                yield await connection.execution_options(isolation_level="AUTOCOMMIT")

    async def close(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.wait([opening])
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = self._sessions = None


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except HeddleError:
        raise
    except Exception as error:
        if dependency_unavailable(error):
            raise unavailable("database", error) from error
        raise


@dataclass(frozen=True)
class _VerifiedKey:
    principal: Principal
    key_id: str
    expires_at: dt.datetime | None
    remembered_until: float  # time.monotonic()


class _VerifiedKeys:
    """API keys verified lately: presented credential (prefix + HMAC) -> principal, for
    ttl_s seconds, at most max_entries (least recently used out first)."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _VerifiedKey] = OrderedDict()

    def get(self, credential: str) -> _VerifiedKey | None:
        entry = self._entries.get(credential)
        if entry is None:
            return None
        if time.monotonic() >= entry.remembered_until:
            del self._entries[credential]
            return None
        self._entries.move_to_end(credential)
        return entry

    def put(self, credential: str, principal: Principal, expires_at: dt.datetime | None) -> None:
        if self.ttl_s <= 0:
            return
        key_id = principal.id.removeprefix("key:")
        until = time.monotonic() + self.ttl_s
        self._entries[credential] = _VerifiedKey(principal, key_id, expires_at, until)
        self._entries.move_to_end(credential)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, key_id: str) -> None:
        for credential in [c for c, e in self._entries.items() if e.key_id == key_id]:
            del self._entries[credential]


class Security:
    """Everything the routes ask about the caller; one per app (`app.state.security`)."""

    def __init__(self, settings: GatewaySettings, db: GatewayDatabase, kv: KV) -> None:
        self.settings = settings
        self.db = db
        self.kv = kv
        self.audit = AuditBuffer(self._write_audit)
        self._verified_keys = _VerifiedKeys(
            settings.api_key_cache_ttl_s, settings.api_key_cache_size
        )
        #: time.monotonic() until which the rate-limit store counts as down (0: up).
        self._rate_store_down_until = 0.0
        # Tokens taken from the shared bucket per round trip (rate_allowance): a tenth of the
        # burst at most, so that the tolerance it documents stays small against the limit.
        # The in-process store costs no round trip and keeps the exact bucket; fail-closed
        # asks the store on every request, so that its outage refuses the very next one.
        self._rate_chunk = (
            1
            if isinstance(kv, MemoryKV) or settings.rate_limit_failure_mode == "closed"
            else max(1, min(settings.rate_limit_lease, settings.rate_limit_burst // 10))
        )
        self._rate_allowances = RateAllowances(RATE_ALLOWANCE_TTL_S)
        self._jwt_key: Any = None
        self._jwt_algorithm = ""
        if settings.jwt_public_key:
            text = settings.jwt_public_key
            if "-----BEGIN" not in text:
                text = Path(text).read_text()
            self._jwt_key, self._jwt_algorithm = text, "RS256"
        elif settings.jwt_hs256_secret:
            self._jwt_key, self._jwt_algorithm = settings.jwt_hs256_secret, "HS256"

    @property
    def enabled(self) -> bool:
        return self.settings.auth_enabled

    async def close(self) -> None:
        await self.audit.close()
        await self.db.close()
        await self.kv.close()

    # ---- authentication -----------------------------------------------------------------

    async def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token (API key or JWT); 401 when it is not valid."""
        if token.startswith(API_KEY_PREFIX):
            return await self._api_key_principal(token)
        if token.count(".") == 2:
            return self._jwt_principal(token)
        raise unauthenticated("invalid credentials")

    async def _api_key_principal(self, token: str) -> Principal:
        parsed = parse_api_key(token)
        if parsed is None:
            raise unauthenticated("invalid credentials")
        prefix, secret = parsed
        presented = hash_secret(self.settings.api_key_pepper, secret)
        credential = f"{prefix}:{presented}"
        remembered = self._verified_keys.get(credential)
        if remembered is not None:
            expires_at = remembered.expires_at
            if expires_at is not None and expires_at <= utcnow():
                self._verified_keys.forget(remembered.key_id)
                raise unauthenticated("API key expired")
            return remembered.principal
        async with self.db.session() as session:
            row = await repo.api_key_by_prefix(session, prefix)
        if row is None or not hmac.compare_digest(row.secret_hash, presented):
            raise unauthenticated("invalid credentials")
        now = utcnow()
        if row.revoked_at is not None:
            raise unauthenticated("API key revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise unauthenticated("API key expired")
        if row.last_used_at is None or now - row.last_used_at >= TOUCH_INTERVAL:
            async with self.db.transaction() as session:
                await repo.touch_api_key(session, row.id, now)
        scopes = frozenset(row.scopes or ())
        principal = Principal(
            id=f"key:{row.id}",
            tenant_id=row.tenant_id,
            admin="admin" in scopes,
            scopes=scopes,
            kind="api_key",
        )
        self._verified_keys.put(credential, principal, row.expires_at)
        return principal

    def _jwt_principal(self, token: str) -> Principal:
        if self._jwt_key is None:
            raise unauthenticated("invalid credentials")
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                self._jwt_key,
                algorithms=[self._jwt_algorithm],  # never from the token's own header
                audience=settings.jwt_audience or None,
                issuer=settings.jwt_issuer or None,
                leeway=settings.jwt_leeway_s,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": bool(settings.jwt_audience),
                },
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token expired") from None
        except jwt.PyJWTError as error:
            raise unauthenticated(f"invalid token: {error}") from None
        tenant = claims.get(settings.jwt_tenant_claim, DEFAULT_TENANT)
        if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
            raise unauthenticated(f"invalid token: bad {settings.jwt_tenant_claim!r} claim")
        roles = _claim_list(claims.get(settings.jwt_roles_claim))
        admin = "admin" in roles
        scopes = set(_claim_list(claims.get("scope", claims.get("scopes"))) & set(SCOPES))
        if not scopes:
            scopes = set(ADMIN_SCOPES if admin else DEFAULT_SCOPES)
        if not admin:
            scopes.discard("admin")
        return Principal(
            id=f"user:{claims['sub']}",
            tenant_id=tenant,
            admin=admin,
            scopes=frozenset(scopes),
            kind="jwt",
        )

    async def check_rate(self, principal: Principal) -> None:
        """429 with Retry-After when the principal's token bucket is empty.

        While the store is unreachable: served unchecked (failure mode `open`) or 503
        (`closed`); it is asked again RATE_STORE_RECHECK_S after each failure. The tokens come
        from the store in chunks of up to `_rate_chunk` (rate_allowance)."""
        allowances = self._rate_allowances
        if allowances.spend(principal.id):
            return
        if time.monotonic() < self._rate_store_down_until:
            self._rate_store_unavailable(None)
            return
        try:
            async with asyncio.timeout(self.settings.rate_limit_timeout_s):
                granted, retry_after = await self.kv.rate_take(
                    f"gateway:{principal.id}",
                    self.settings.rate_limit_per_s,
                    self.settings.rate_limit_burst,
                    self._rate_chunk,
                )
        except Exception as error:
            if not (isinstance(error, TimeoutError) or dependency_unavailable(error)):
                raise
            if self._rate_store_down_until == 0.0:
                log.warning(
                    "rate-limit store unreachable (%r): requests are %s until it is back",
                    error,
                    "served without rate limits"
                    if self.settings.rate_limit_failure_mode == "open"
                    else "refused with 503",
                )
            self._rate_store_down_until = time.monotonic() + RATE_STORE_RECHECK_S
            self._rate_store_unavailable(error)
            return
        if self._rate_store_down_until:
            self._rate_store_down_until = 0.0
            log.warning("rate-limit store reachable again: rate limits apply")
        if granted:
            allowances.add(principal.id, granted - 1)
            return
        # A concurrent request of the same principal may have taken a chunk meanwhile.
        if not allowances.spend(principal.id):
            wait = max(1, math.ceil(retry_after))
            raise HTTPException(
                429,
                f"rate limit of {self.settings.rate_limit_per_s:g} requests/s exceeded",
                headers={"Retry-After": str(wait)},
            )

    def _rate_store_unavailable(self, error: BaseException | None) -> None:
        if self.settings.rate_limit_failure_mode == "open":
            RATE_LIMIT_UNCHECKED.labels("served").inc()
            return
        RATE_LIMIT_UNCHECKED.labels("refused").inc()
        raise unavailable("rate-limit store", error)

    async def health(self) -> dict[str, bool]:
        """Whether the gateway's own stores answer: `database`, and `redis` when the rate
        limits live there (not for the in-process store)."""
        timeout = self.settings.readiness_timeout_s

        async def database_up() -> bool:
            try:
                async with asyncio.timeout(timeout), self.db.session() as session:
                    await session.execute(text("SELECT 1"))
            except Exception as error:
                log.debug("readiness: database down: %r", error)
                return False
            return True

        async def redis_up() -> bool:
            try:
                async with asyncio.timeout(timeout):
                    await self.kv.get("gateway:readiness")
            except Exception as error:
                log.debug("readiness: redis down: %r", error)
                return False
            return True

        checks = {"database": database_up()}
        if not isinstance(self.kv, MemoryKV):
            checks["redis"] = redis_up()
        results = await asyncio.gather(*checks.values())
        return dict(zip(checks, results, strict=True))

    # ---- authorization ------------------------------------------------------------------

    def require(self, principal: Principal, action: str) -> None:
        """A tenant-wide action (see roles.TENANT_ACTIONS): 403 when not allowed."""
        self._require_scope(principal, action)
        if TENANT_ACTIONS.get(action) == "admin" and not principal.admin:
            raise PermissionDenied(f"{action} needs the tenant admin role")

    @staticmethod
    def _require_scope(principal: Principal, action: str) -> None:
        scope = ACTION_SCOPES[action]
        if not principal.has_scope(scope):
            raise PermissionDenied(f"this credential lacks the {scope!r} scope")

    async def require_workflow(
        self, principal: Principal, workflow_id: str, action: WorkflowAction
    ) -> None:
        """A workflow action: 404 without any role on it (its existence is not revealed),
        403 with a role that does not allow the action."""
        self._require_scope(principal, action)
        if principal.admin:
            return
        role = await self.role_of(principal, workflow_id)
        if role is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        if not role_allows(role, action):
            raise PermissionDenied(f"the {role} role cannot {action} this workflow")

    async def role_of(self, principal: Principal, workflow_id: str) -> str | None:
        if principal.admin:
            return "owner"
        async with self.db.session() as session:
            grant = await repo.get_grant(session, principal.tenant_id, workflow_id, principal.id)
        return grant.role if grant is not None else None

    async def visible_workflows(self, principal: Principal) -> list[str] | None:
        """The workflows the principal may read; None: all of the tenant's (admins)."""
        if principal.admin:
            return None
        async with self.db.session() as session:
            return await repo.granted_workflows(session, principal.tenant_id, principal.id)

    # ---- grants -------------------------------------------------------------------------

    async def grant(
        self, principal: Principal, workflow_id: str, grantee: str, role: str
    ) -> RoleGrantRow:
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}")
        if not self.enabled:
            raise FailedPrecondition("authentication is disabled: there are no principals")
        async with self.db.transaction() as session:
            row = await repo.get_grant(session, principal.tenant_id, workflow_id, grantee)
            if row is None:
                row = RoleGrantRow(
                    tenant_id=principal.tenant_id,
                    workflow_id=workflow_id,
                    principal=grantee,
                    role=role,
                    granted_by=principal.id,
                    created_at=utcnow(),
                )
                session.add(row)
            row.role = role
            row.granted_by = principal.id
        return row

    async def grants(self, principal: Principal, workflow_id: str) -> Sequence[RoleGrantRow]:
        if not self.enabled:
            return []
        async with self.db.session() as session:
            return await repo.list_grants(session, principal.tenant_id, workflow_id)

    async def revoke_grant(self, principal: Principal, workflow_id: str, grantee: str) -> None:
        async with self.db.transaction() as session:
            row = await repo.get_grant(session, principal.tenant_id, workflow_id, grantee)
            if row is None:
                raise NotFound(f"{grantee!r} has no role on workflow {workflow_id!r}")
            await session.delete(row)

    async def owner_created(self, principal: Principal, workflow_id: str) -> None:
        """The creator of a workflow becomes its owner."""
        if self.enabled and principal.kind != "anonymous":
            await self.grant(principal, workflow_id, principal.id, "owner")

    async def workflow_deleted(self, principal: Principal, workflow_id: str) -> None:
        if not self.enabled:
            return
        async with self.db.transaction() as session:
            await repo.delete_grants(session, principal.tenant_id, workflow_id)

    # ---- API keys -----------------------------------------------------------------------

    async def create_api_key(
        self,
        *,
        tenant_id: str,
        name: str,
        scopes: Iterable[str],
        expires_at: dt.datetime | None,
        created_by: str,
        token: str | None = None,
    ) -> tuple[ApiKeyRow, str]:
        """Store a new key (or the given token) and return it with its full token."""
        if token is not None:
            parsed = parse_api_key(token)
            if parsed is None:
                raise InvalidArgument("an API key looks like hk_<12 hex digits>_<secret>")
            prefix, secret = parsed
        else:
            token, prefix, secret = new_api_key()
        row = ApiKeyRow(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            name=name,
            prefix=prefix,
            secret_hash=hash_secret(self.settings.api_key_pepper, secret),
            scopes=sorted(set(scopes)),
            created_by=created_by,
            created_at=utcnow(),
            expires_at=expires_at,
        )
        async with self.db.transaction() as session:
            session.add(row)
        return row, token

    async def list_api_keys(
        self, tenant_id: str, page: int, page_size: int
    ) -> tuple[Sequence[ApiKeyRow], int]:
        async with self.db.session() as session:
            return await repo.list_api_keys(session, tenant_id, (page - 1) * page_size, page_size)

    async def revoke_api_key(self, tenant_id: str, key_id: str) -> None:
        async with self.db.transaction() as session:
            row = await repo.get_api_key(session, tenant_id, key_id)
            if row is None or row.revoked_at is not None:
                raise NotFound(f"API key {key_id!r} not found")
            row.revoked_at = utcnow()
        self._verified_keys.forget(key_id)

    async def key_is_valid(self, token: str) -> bool:
        try:
            await self._api_key_principal(token)
        except HTTPException:
            return False
        return True

    async def install_bootstrap_key(self) -> None:
        """Install HEDDLE_BOOTSTRAP_API_KEY as a default-tenant admin key if it is missing."""
        token = self.settings.bootstrap_api_key
        if not token or not self.enabled:
            return
        parsed = parse_api_key(token)
        if parsed is None:
            raise ValueError("HEDDLE_BOOTSTRAP_API_KEY must look like hk_<12 hex>_<secret>")
        async with self.db.session() as session:
            existing = await repo.api_key_by_prefix(session, parsed[0])
        if existing is None:
            await self.create_api_key(
                tenant_id=DEFAULT_TENANT,
                name="bootstrap",
                scopes=ADMIN_SCOPES,
                expires_at=None,
                created_by="bootstrap",
                token=token,
            )

    # ---- audit --------------------------------------------------------------------------

    async def record(
        self,
        principal: Principal,
        *,
        action: str,
        object_type: str,
        object_id: str,
        status_code: int,
        request_id: str,
    ) -> None:
        outcome = (
            "success"
            if status_code < 400
            else "denied"
            if status_code in (401, 403)
            else ("failed")
        )
        # Held and written with the others gathered meanwhile in one INSERT (audit_buffer).
        self.audit.add(
            {
                "id": str(uuid.uuid4()),
                "ts": utcnow(),
                "tenant_id": principal.tenant_id,
                "principal": principal.id,
                "action": action,
                "object_type": object_type,
                "object_id": object_id[:300],
                "outcome": outcome,
                "status_code": status_code,
                "request_id": request_id,
            }
        )

    async def _write_audit(self, records: list[dict[str, Any]]) -> None:
        # One INSERT, committed by itself: a batch split by the driver into several
        # statements may be stored in part when one fails; the retry skips what was stored.
        async with self.db.autocommit() as connection:
            await repo.insert_audit(connection, records)

    async def audit_page(
        self, tenant_id: str, page: int, page_size: int, **filters: str | None
    ) -> tuple[Sequence[AuditRow], int]:
        try:  # this gateway's own records, up to this request, are in the answer
            await self.audit.flush()
        except Exception as error:  # still held; the read below says what is down
            log.warning("could not write the held audit records before a read: %s", error)
        async with self.db.session() as session:
            return await repo.list_audit(
                session, tenant_id, (page - 1) * page_size, page_size, **filters
            )


def _claim_list(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list | tuple):
        return {str(item) for item in value}
    return set()


# ---- FastAPI dependencies -------------------------------------------------------------------


def get_security(connection: HTTPConnection) -> Security:
    security: Security = connection.app.state.security
    return security


def bearer_token(connection: HTTPConnection, *, allow_query: bool) -> str | None:
    """The credential of a request: `Authorization: Bearer`, `X-API-Key`, or — for event
    streams only, which browsers cannot give headers — `?access_token=`."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = connection.headers.get("x-api-key", "").strip()
    if api_key:
        return api_key
    if allow_query:
        token = connection.query_params.get("access_token", "").strip()
        if token:
            return token
    return None


async def authenticate_connection(connection: HTTPConnection) -> Principal:
    """Authenticate, rate-limit, and remember the principal on the connection (once per
    request: FastAPI caches the dependency)."""
    cached = getattr(connection.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    security = get_security(connection)
    if not security.enabled:
        principal = ANONYMOUS
    else:
        # The scope's path, not connection.url (a URL object built per request).
        scope = connection.scope
        streaming = scope["type"] == "websocket" or scope["path"].endswith("/events")
        token = bearer_token(connection, allow_query=streaming)
        if token is None:
            raise unauthenticated("authentication required: send Authorization: Bearer <key>")
        principal = await security.authenticate(token)
        await security.check_rate(principal)
    connection.state.principal = principal
    connection.state.tenant_id = principal.tenant_id
    return principal
