"""Webhook subscriptions, and the bindings of the webhook queue that they need.

The deliverer's queue (`log.webhooks`) is bound on heddle.events only to the routing patterns
that active subscriptions ask for (union over all tenants): with no subscription to node
events, node events never reach the queue (RabbitMQ would write each to disk and the log
service would consume and ack each for nothing, 3 per node).

A create or update binds first (the patterns recorded in `webhook_queue_bindings`, their rows
locked, then bound on the broker), then commits its row in the same transaction: when it
answers, the next matching event is on the queue. Unbinding is left to `reconcile` (at start and
periodically), which locks every binding row, unbinds the patterns no active subscription
needs unless one was ensured within `grace_s` (a create in flight elsewhere), and binds what is
needed and missing. The row locks order it with creates on other replicas and with another
replica's reconcile; the bindings are on the shared queue, so one bind serves every replica.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import secrets as token_source
import uuid
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.bus import EVENTS_EXCHANGE, EventBus
from libs.common.db import utcnow
from libs.common.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.common.secrets import SecretBox
from services.log import repository
from services.log.models import WebhookDeliveryRow, WebhookRow
from services.log.webhooks import secret_name

log = logging.getLogger(__name__)

#: The event families a webhook can receive (those the deliverer decodes as events).
EVENT_FAMILIES = ("execution", "node")
_PATTERN = re.compile(r"^([a-z_]+|\*|#)(\.([a-z_]+|\*|#))*$")
DELIVERY_STATUSES = ("pending", "delivered", "dead")


def binding_keys(pattern: str) -> list[str]:
    """The routing patterns to bind for a subscription's event pattern: the pattern itself
    when it names a family, else one per family (`*.failed` -> `execution.failed`,
    `node.failed`; `#` -> `execution.#`, `node.#`), so that no other event family (knowledge
    progress, ...) is routed to the queue."""
    first, _, rest = pattern.partition(".")
    if first == "*":
        return [f"{family}.{rest}" if rest else family for family in EVENT_FAMILIES]
    if first == "#":
        return [f"{family}.#.{rest}" if rest else f"{family}.#" for family in EVENT_FAMILIES]
    return [pattern] if first in EVENT_FAMILIES else []


def needed_keys(subscriptions: Iterable[Iterable[str]]) -> set[str]:
    """The union of the binding keys of several subscriptions' event patterns."""
    return {key for events in subscriptions for pattern in events for key in binding_keys(pattern)}


@dataclasses.dataclass(frozen=True)
class WebhookSpec:
    url: str
    events: Sequence[str]
    workflow_id: str | None = None
    secret: str = ""
    description: str = ""
    active: bool = True


def _check(spec: WebhookSpec) -> None:
    problems = []
    if not spec.url:
        problems.append({"field": "url", "message": "required"})
    if not spec.events:
        problems.append({"field": "events", "message": "at least one event pattern"})
    for index, pattern in enumerate(spec.events):
        if len(pattern) > 64 or not _PATTERN.match(pattern):
            problems.append(
                {"field": f"events[{index}]", "message": f"not an event pattern: {pattern!r}"}
            )
    if problems:
        raise InvalidArgument(
            "invalid webhook: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
            problems,
        )


class WebhookSubscriptions:
    """Create, change, delete and read subscriptions; keep the queue's bindings to them."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus | None,
        secrets_key: str,
        *,
        queue: str,
        grace_s: float,
        changed: Callable[[str], None] = lambda tenant_id: None,
    ) -> None:
        self._sessions = sessions
        # None: no deliverer in this deployment, nothing bound (a queue nobody consumes
        # would fill up and refuse the relay's publishes).
        self._bus = bus
        self._box = SecretBox(secrets_key) if secrets_key else None
        self._queue = queue
        self._grace = dt.timedelta(seconds=grace_s)
        # Told the tenant whose subscriptions changed (the deliverer drops its cache).
        self._changed = changed

    def _sealer(self) -> SecretBox:
        if self._box is None:
            raise FailedPrecondition("webhooks need HEDDLE_SECRETS_KEY (their secrets are sealed)")
        return self._box

    async def _bind(self, session: AsyncSession, events: Sequence[str]) -> None:
        keys = needed_keys([events])
        if self._bus is None or not keys:
            return
        await repository.ensure_bindings(session, keys, utcnow())
        for key in sorted(keys):
            await self._bus.bind(EVENTS_EXCHANGE, self._queue, key)

    async def create(self, tenant_id: str, spec: WebhookSpec) -> tuple[WebhookRow, str]:
        """The new subscription and its secret (generated unless given)."""
        _check(spec)
        box = self._sealer()
        webhook_id = str(uuid.uuid4())
        secret = spec.secret or token_source.token_urlsafe(32)
        row = WebhookRow(
            id=webhook_id,
            tenant_id=tenant_id,
            url=spec.url,
            events=list(dict.fromkeys(spec.events)),
            workflow_id=spec.workflow_id,
            secret_ciphertext=box.encrypt(tenant_id, secret_name(webhook_id), secret),
            description=spec.description,
            active=spec.active,
            created_at=utcnow(),
        )
        async with self._sessions() as session, session.begin():
            if spec.active:
                await self._bind(session, spec.events)
            session.add(row)
        self._changed(tenant_id)
        return row, secret

    async def update(self, tenant_id: str, webhook_id: str, spec: WebhookSpec) -> WebhookRow:
        """Replace a subscription (its secret too when one is given)."""
        _check(spec)
        box = self._sealer()
        async with self._sessions() as session, session.begin():
            row = await repository.get_webhook(session, tenant_id, webhook_id)
            if row is None:
                raise NotFound(f"webhook '{webhook_id}' not found")
            if spec.active:
                await self._bind(session, spec.events)
            row.url = spec.url
            row.events = list(dict.fromkeys(spec.events))
            row.workflow_id = spec.workflow_id
            row.description = spec.description
            row.active = spec.active
            if spec.secret:
                row.secret_ciphertext = box.encrypt(tenant_id, secret_name(webhook_id), spec.secret)
            row.updated_at = utcnow()
        self._changed(tenant_id)
        return row

    async def delete(self, tenant_id: str, webhook_id: str) -> None:
        """Delete a subscription and its delivery log; its bindings go at the next reconcile."""
        async with self._sessions() as session, session.begin():
            if await repository.get_webhook(session, tenant_id, webhook_id) is None:
                raise NotFound(f"webhook '{webhook_id}' not found")
            await repository.delete_webhook(session, webhook_id)
        self._changed(tenant_id)

    async def get(self, tenant_id: str, webhook_id: str) -> WebhookRow:
        async with self._sessions() as session:
            row = await repository.get_webhook(session, tenant_id, webhook_id)
        if row is None:
            raise NotFound(f"webhook '{webhook_id}' not found")
        return row

    async def page(
        self, tenant_id: str, page: int, page_size: int
    ) -> tuple[Sequence[WebhookRow], int]:
        async with self._sessions() as session:
            return await repository.list_webhooks(
                session, tenant_id, (max(page, 1) - 1) * page_size, page_size
            )

    async def deliveries(
        self, tenant_id: str, webhook_id: str, status: str, page: int, page_size: int
    ) -> tuple[Sequence[WebhookDeliveryRow], int]:
        if status and status not in DELIVERY_STATUSES:
            raise InvalidArgument(
                f"status: one of {', '.join(DELIVERY_STATUSES)}",
                [{"field": "status", "message": f"unknown status {status!r}"}],
            )
        async with self._sessions() as session:
            if await repository.get_webhook(session, tenant_id, webhook_id) is None:
                raise NotFound(f"webhook '{webhook_id}' not found")
            return await repository.list_deliveries(
                session, webhook_id, status, (max(page, 1) - 1) * page_size, page_size
            )

    async def reconcile(self) -> tuple[list[str], list[str]]:
        """Bind what active subscriptions need, unbind what none needs and nothing ensured
        within the grace period; (bound, unbound) patterns."""
        if self._bus is None:
            return [], []
        now = utcnow()
        unbound: list[str] = []
        async with self._sessions() as session, session.begin():
            # Locked first: a create holding a row commits before we read the subscriptions.
            recorded = {row.pattern: row for row in await repository.lock_bindings(session)}
            needed = needed_keys(await repository.active_event_patterns(session))
            missing = needed - recorded.keys()
            await repository.ensure_bindings(session, missing, now)
            for key in sorted(needed):
                await self._bus.bind(EVENTS_EXCHANGE, self._queue, key)
            for key, row in recorded.items():
                if key in needed or row.ensured_at > now - self._grace:
                    continue
                await self._bus.unbind(EVENTS_EXCHANGE, self._queue, key)
                await repository.forget_binding(session, key)
                unbound.append(key)
        if missing or unbound:
            log.info(
                "webhook queue bindings reconciled",
                extra={"bound": sorted(missing), "unbound": unbound},
            )
        return sorted(missing), unbound
