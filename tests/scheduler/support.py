"""Helpers of the scheduler tests."""

from __future__ import annotations

from heddle.v1 import events_pb2

from libs.common.bus import Message


class FireRecorder:
    """Every TriggerFire published while subscribed, as parsed messages."""

    def __init__(self) -> None:
        self.fires: list[events_pb2.TriggerFire] = []

    async def handle(self, message: Message) -> None:
        fire = events_pb2.TriggerFire()
        fire.ParseFromString(message.body)
        self.fires.append(fire)

    def of(self, schedule_id: str) -> list[events_pb2.TriggerFire]:
        return [fire for fire in self.fires if fire.schedule_id == schedule_id]

    def keys(self, schedule_id: str) -> list[str]:
        return [fire.dedupe_key for fire in self.of(schedule_id)]
