"""What every bus implementation shares: the exchanges, a delivered message, a handler.

Its own module so that the bus interface (libs/common/bus.py) and the RabbitMQ
implementation (libs/common/rabbitmq.py) both import it and not each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

EVENTS_EXCHANGE = "heddle.events"
TRIGGERS_EXCHANGE = "heddle.triggers"
LOGS_EXCHANGE = "heddle.logs"


@dataclass(frozen=True)
class Message:
    """A delivered message."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delivery: int = 1  # 1 on first delivery, more on redelivery


Handler = Callable[[Message], Awaitable[None]]


#: What publish_many takes: (routing key, body, headers).
OutgoingMessage = tuple[str, bytes, dict[str, str]]
