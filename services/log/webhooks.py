"""Outbound webhooks: events of heddle.events POSTed, signed, to the tenants' subscribed URLs.

Why here: the log service already consumes heddle.events (the event history) and owns the
tables of what happened; a deliverer needs only the events, the database and outbound HTTP,
none of the workflow engine's state. Its queue (`log.webhooks`) is separate from the history's
so that a slow receiver never holds the history back; log replicas compete on it.

Each event that matches a subscription becomes one ``webhook_deliveries`` row, unique per
(subscription, event id): a redelivered broker message adds nothing, so a receiver gets each
event id once (modulo a crash between its 2xx and our record of it; the ``Idempotency-Key``
header carries the event id for that case). The row is written before the message is acked,
then delivered with retries and exponential backoff (tenacity); a replica holds a row by a
lease renewed before each attempt, and a periodic sweep takes over rows whose lease expired
(a replica that died). After the last attempt the row becomes ``dead``: the dead-letter
record, listed with the others at GET /api/v1/webhooks/{id}/deliveries.

Each request carries ``X-Heddle-Signature: sha256=<hex>``, the HMAC-SHA256 of
``<X-Heddle-Timestamp>.<body>`` under the subscription's secret, and the URL is checked
against the http_request address policy (libs/common/netguard.py) before every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from google.protobuf.message import DecodeError
from heddle.v1 import events_pb2
from prometheus_client import Counter
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from libs.common import jsonutil
from libs.common.bus import EVENTS_EXCHANGE, EventBus, Message, Subscription, topic_matches
from libs.common.db import utcnow
from libs.common.netguard import ForbiddenAddressError, check_url_allowed_async
from libs.common.periodic import periodic
from libs.common.secrets import SecretBox
from libs.common.timeutil import from_timestamp
from services.log.models import DEFAULT_TENANT, WebhookDeliveryRow, WebhookRow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Heddle-Signature"
TIMESTAMP_HEADER = "X-Heddle-Timestamp"

WEBHOOK_DELIVERIES = Counter(
    "heddle_webhook_deliveries_total",
    "Webhook deliveries that ended, by outcome (delivered, dead).",
    ["outcome"],
)
WEBHOOK_ATTEMPTS = Counter(
    "heddle_webhook_attempts_total", "Webhook POST attempts, by result (ok, error).", ["result"]
)


def secret_name(subscription_id: str) -> str:
    """The name a subscription's secret is sealed under (SecretBox binds tenant and name)."""
    return f"webhook:{subscription_id}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Heddle-Signature value: ``sha256=`` + HMAC-SHA256(secret, timestamp + "." + body)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def event_id(event: events_pb2.Event) -> str:
    """An event's id across the system: its execution and per-execution sequence number."""
    return f"{event.execution_id}:{event.seq}"


def payload(event: events_pb2.Event) -> dict[str, Any]:
    """The JSON body POSTed for an event."""
    return {
        "id": event_id(event),
        "type": event.type,
        "execution_id": event.execution_id,
        "workflow_id": event.workflow_id,
        "node_id": event.node_id or None,
        "seq": event.seq,
        "ts": from_timestamp(event.ts).isoformat() if event.ts.seconds else None,
        "data": jsonutil.loads(event.data_json) if event.data_json else None,
    }


def subscription_matches(subscription: WebhookRow, event: events_pb2.Event) -> bool:
    if subscription.workflow_id and subscription.workflow_id != event.workflow_id:
        return False
    return any(topic_matches(pattern, event.type) for pattern in subscription.events or [])


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0
    sweep_interval_s: float = 15.0
    concurrency: int = 32
    allow_hosts: tuple[str, ...] = ()
    queue: str = "log.webhooks"

    @property
    def lease_s(self) -> float:
        """Long enough for one attempt and the wait before the next one."""
        return self.timeout_s + self.backoff_max_s + 5.0


class _AttemptFailed(Exception):
    """A retryable failure of one POST (a non-2xx answer, a connection error)."""


class _Forbidden(Exception):
    """The URL's address is refused by the policy: no retry helps."""


class WebhookDeliverer:
    """Consumes events, records the deliveries they call for, and delivers them."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        secrets_key: str,
        policy: DeliveryPolicy,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._box = SecretBox(secrets_key) if secrets_key else None
        self.policy = policy
        self._http = http or httpx.AsyncClient(follow_redirects=False)
        self._owns_http = http is None
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(policy.concurrency)
        self._sweeper: asyncio.Task[None] | None = None
        # tenant -> (monotonic time read, active subscriptions): one query per tenant per
        # second at most, however many events flow.
        self._cache: dict[str, tuple[float, Sequence[WebhookRow]]] = {}
        self._generation: dict[str, int] = {}

    async def start(self) -> None:
        # No binding here: the queue is bound to what the subscriptions need by
        # services/log/subscriptions.py (at their create/update and by its reconcile).
        self._subscription = await self._bus.subscribe(
            EVENTS_EXCHANGE,
            [],
            self._on_event,
            queue=self.policy.queue,
            prefetch=256,
        )
        self._sweeper = periodic(
            "webhook-sweeper", self.policy.sweep_interval_s, self.sweep, immediately=True
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.cancel()
            self._subscription = None
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sweeper = None
        if self._owns_http:
            await self._http.aclose()

    # ------------------------------------------------------------------ events -> deliveries

    def forget(self, tenant_id: str) -> None:
        """Drop the tenant's cached subscriptions: a subscription this replica just created or
        changed sees the next event. Another replica's cache keeps the old list for up to a
        second, the cache's age; an event it consumes meanwhile misses the new subscription."""
        self._cache.pop(tenant_id, None)
        # A read that began before the change must not cache what it read.
        self._generation[tenant_id] = self._generation.get(tenant_id, 0) + 1

    async def _active(self, tenant_id: str) -> Sequence[WebhookRow]:
        cached = self._cache.get(tenant_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        generation = self._generation.get(tenant_id, 0)
        async with self._sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(WebhookRow).where(
                            WebhookRow.tenant_id == tenant_id, WebhookRow.active.is_(True)
                        )
                    )
                )
                .scalars()
                .all()
            )
        if self._generation.get(tenant_id, 0) == generation:
            self._cache[tenant_id] = (now, rows)
        return rows

    async def _on_event(self, message: Message) -> None:
        try:
            event = events_pb2.Event.FromString(message.body)
        except DecodeError:
            log.warning("undecodable event skipped by the webhook deliverer")
            return
        tenant_id = event.tenant_id or DEFAULT_TENANT
        matching = [s for s in await self._active(tenant_id) if subscription_matches(s, event)]
        if not matching:
            return
        created = await self._record(event, tenant_id, matching)
        for delivery_id in created:
            self._spawn(delivery_id)

    async def _record(
        self, event: events_pb2.Event, tenant_id: str, subscriptions: list[WebhookRow]
    ) -> list[str]:
        """Insert the deliveries not yet recorded (a redelivered message finds them all)."""
        the_id = event_id(event)
        body = payload(event)
        for _ in range(2):
            async with self._sessions() as session:
                existing = set(
                    (
                        await session.execute(
                            select(WebhookDeliveryRow.subscription_id).where(
                                WebhookDeliveryRow.event_id == the_id,
                                WebhookDeliveryRow.subscription_id.in_(
                                    [s.id for s in subscriptions]
                                ),
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
                now = utcnow()
                rows = [
                    WebhookDeliveryRow(
                        id=str(uuid.uuid4()),
                        subscription_id=subscription.id,
                        tenant_id=tenant_id,
                        event_id=the_id,
                        event_type=event.type,
                        payload=body,
                        status="pending",
                        attempts=0,
                        last_error="",
                        created_at=now,
                        # Held by this replica from the start: the sweep leaves it alone.
                        lease_until=now + dt.timedelta(seconds=self.policy.lease_s),
                    )
                    for subscription in subscriptions
                    if subscription.id not in existing
                ]
                if not rows:
                    return []
                session.add_all(rows)
                try:
                    await session.commit()
                except IntegrityError:
                    # The same event handled at once elsewhere: what it recorded stands.
                    await session.rollback()
                    continue
                return [row.id for row in rows]
        return []

    # ------------------------------------------------------------------ delivery

    def _spawn(self, delivery_id: str) -> None:
        task = asyncio.create_task(self._deliver(delivery_id), name=f"webhook-{delivery_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery_id: str) -> None:
        try:
            async with self._slots:
                await self._deliver_held(delivery_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease runs out and the sweep tries again.
            log.exception("webhook delivery %s crashed", delivery_id)

    async def _deliver_held(self, delivery_id: str) -> None:
        async with self._sessions() as session:
            delivery = await session.get(WebhookDeliveryRow, delivery_id)
            subscription = (
                await session.get(WebhookRow, delivery.subscription_id) if delivery else None
            )
        if delivery is None or delivery.status != "pending":
            return
        if subscription is None or self._box is None:
            why = "subscription deleted" if subscription is None else "HEDDLE_SECRETS_KEY unset"
            await self._finish(delivery_id, "dead", error=why)
            return
        secret = self._box.decrypt(
            subscription.tenant_id, secret_name(subscription.id), subscription.secret_ciphertext
        )
        body = jsonutil.dumps(delivery.payload)
        remaining = max(1, self.policy.max_attempts - delivery.attempts)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(remaining),
            wait=wait_exponential(multiplier=self.policy.backoff_s, max=self.policy.backoff_max_s),
            retry=retry_if_exception_type(_AttemptFailed),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(delivery, subscription.url, secret, body)
        except RetryError:
            await self._finish(delivery_id, "dead")
            WEBHOOK_DELIVERIES.labels("dead").inc()
            log.warning(
                "webhook delivery dead after %d attempts",
                self.policy.max_attempts,
                extra={"subscription_id": subscription.id, "event_id": delivery.event_id},
            )
            return
        except _Forbidden as exc:
            await self._finish(delivery_id, "dead", error=str(exc))
            WEBHOOK_DELIVERIES.labels("dead").inc()
            return
        await self._finish(delivery_id, "delivered")
        WEBHOOK_DELIVERIES.labels("delivered").inc()

    async def _attempt(
        self, delivery: WebhookDeliveryRow, url: str, secret: str, body: bytes
    ) -> None:
        now = utcnow()
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == delivery.id)
                .values(
                    attempts=WebhookDeliveryRow.attempts + 1,
                    lease_until=now + dt.timedelta(seconds=self.policy.lease_s),
                )
            )
        try:
            await check_url_allowed_async(url, list(self.policy.allow_hosts))
        except (ForbiddenAddressError, UnicodeError, ValueError) as exc:
            raise _Forbidden(str(exc)) from None
        except OSError as exc:
            await self._note(delivery.id, None, f"cannot resolve the host: {exc}")
            raise _AttemptFailed(str(exc)) from None
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Heddle-Webhooks/1",
            "Idempotency-Key": delivery.event_id,
            "X-Heddle-Event": delivery.event_type,
            "X-Heddle-Delivery": delivery.id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        try:
            response = await self._http.post(
                url, content=body, headers=headers, timeout=self.policy.timeout_s
            )
        except httpx.HTTPError as exc:
            WEBHOOK_ATTEMPTS.labels("error").inc()
            await self._note(delivery.id, None, f"{type(exc).__name__}: {exc}"[:1000])
            raise _AttemptFailed(str(exc)) from None
        if not 200 <= response.status_code < 300:
            WEBHOOK_ATTEMPTS.labels("error").inc()
            await self._note(delivery.id, response.status_code, f"HTTP {response.status_code}")
            raise _AttemptFailed(f"HTTP {response.status_code}")
        WEBHOOK_ATTEMPTS.labels("ok").inc()
        await self._note(delivery.id, response.status_code, "")

    async def _note(self, delivery_id: str, status_code: int | None, error: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == delivery_id)
                .values(last_status_code=status_code, last_error=error)
            )

    async def _finish(self, delivery_id: str, status: str, *, error: str | None = None) -> None:
        values: dict[str, Any] = {"status": status, "lease_until": None}
        if status == "delivered":
            values["delivered_at"] = utcnow()
        if error is not None:
            values["last_error"] = error[:1000]
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.id == delivery_id)
                .values(**values)
            )

    # ------------------------------------------------------------------ takeover

    async def sweep(self) -> int:
        """Take over pending deliveries whose lease expired (their replica died); how many."""
        now = utcnow()
        async with self._sessions() as session, session.begin():
            ids = (
                (
                    await session.execute(
                        select(WebhookDeliveryRow.id)
                        .where(
                            WebhookDeliveryRow.status == "pending",
                            or_(
                                WebhookDeliveryRow.lease_until.is_(None),
                                WebhookDeliveryRow.lease_until < now,
                            ),
                        )
                        .limit(200)
                    )
                )
                .scalars()
                .all()
            )
            taken: list[str] = []
            for delivery_id in ids:
                # Claimed only if no other replica claimed it meanwhile.
                result = await session.execute(
                    update(WebhookDeliveryRow)
                    .where(
                        WebhookDeliveryRow.id == delivery_id,
                        WebhookDeliveryRow.status == "pending",
                        or_(
                            WebhookDeliveryRow.lease_until.is_(None),
                            WebhookDeliveryRow.lease_until < now,
                        ),
                    )
                    .values(lease_until=now + dt.timedelta(seconds=self.policy.lease_s))
                )
                if getattr(result, "rowcount", 0) == 1:
                    taken.append(delivery_id)
        for delivery_id in taken:
            self._spawn(delivery_id)
        return len(taken)
