"""Trigger consumption: a fire (from the scheduler over the bus, or FireTrigger) starts its
workflow, or every workflow bound to its webhook, once per dedupe key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heddle.v1 import events_pb2

from libs.common import jsonutil
from libs.common.bus import TRIGGERS_EXCHANGE, EventBus, Message, Subscription, traced
from libs.common.errors import InvalidArgument, NotFound
from services.workflow import repository as repo
from services.workflow.models import DEFAULT_TENANT

if TYPE_CHECKING:
    from services.workflow.engine import Engine

TRIGGERS_QUEUE = "workflow.triggers"


@dataclass(frozen=True)
class Fire:
    """What a trigger fire asks for."""

    tenant_id: str
    workflow_id: str
    source: str
    dedupe_key: str
    inputs: Any
    priority: int = 5


def fire_from_proto(fire: events_pb2.TriggerFire) -> Fire:
    try:
        inputs = jsonutil.loads(fire.inputs_json)
    except ValueError as error:
        raise InvalidArgument(f"inputs is not valid JSON: {error}") from error
    return Fire(
        tenant_id=fire.tenant_id or DEFAULT_TENANT,
        workflow_id=fire.workflow_id,
        source=fire.source,
        dedupe_key=fire.dedupe_key,
        inputs=inputs,
        priority=fire.priority if fire.HasField("priority") else 5,
    )


async def start_from_trigger(engine: Engine, fire: Fire) -> list[str]:
    """Start what a fire asks for; the ids of the executions (a repeated fire: the same).

    The dedupe key makes a repeated fire a no-op (one execution per key and workflow).
    """
    if not fire.dedupe_key:
        raise InvalidArgument("trigger fire has no dedupe_key")
    if fire.workflow_id:
        targets = [fire.workflow_id]
    elif fire.source.startswith("webhook:"):
        name = fire.source.removeprefix("webhook:")
        async with engine.sessions() as session:
            targets = await repo.webhook_workflows(session, fire.tenant_id, name)
        if not targets:
            raise NotFound(f"no workflow is bound to the webhook trigger {name!r}")
    else:
        raise InvalidArgument("trigger fire names no workflow_id")
    started = []
    for workflow_id in targets:
        key = f"trigger:{fire.dedupe_key}"
        if not fire.workflow_id:
            key = f"{key}:{workflow_id}"
        row, _ = await engine.start_execution(
            tenant_id=fire.tenant_id,
            workflow_id=workflow_id,
            version=0,
            inputs=fire.inputs,
            idempotency_key=key,
            trigger=fire.source or "trigger",
            priority=fire.priority,
        )
        started.append(row.id)
    return started


async def consume_triggers(bus: EventBus, engine: Engine) -> Subscription:
    """Start what every fire on the triggers exchange asks for (one shared queue)."""

    async def on_trigger(message: Message) -> None:
        fire = events_pb2.TriggerFire.FromString(message.body)
        await start_from_trigger(engine, fire_from_proto(fire))

    return await bus.subscribe(
        TRIGGERS_EXCHANGE,
        ["trigger.#"],
        traced(on_trigger, "workflow", TRIGGERS_QUEUE),
        queue=TRIGGERS_QUEUE,
        prefetch=16,
    )
