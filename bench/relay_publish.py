"""The outbox relay's publish alone: the workflow replica's CPU per event it relays.

    python bench/relay_publish.py [--rounds 5] [--tree PATH]

`OutboxRelay._publish` of the tree (or of `--tree`, a worktree to compare against) on a
`RabbitBus` to the shared RabbitMQ under a prefix of its own (its exchanges deleted at the
end; no queue is bound, so the broker confirms without storing): rounds of 7 executions x 2
events, as a chain's relay round gathers them in its linger, shaped like the runner's event
rows. Prints this process's CPU per event for each round (200 publishes of 14 events: the
event's proto, its headers, the AMQP frames, the socket write, reading the confirms) and the
minimum, with the CPU calibration. Compare trees with interleaved runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import uuid
from pathlib import Path
from typing import Any

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
ROUNDS_PER_FIGURE = 200
EXECUTIONS_PER_ROUND = 7


def events(count: int, execution_id: str) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    return [
        {
            "execution_id": execution_id,
            "seq": seq,
            "type": "node.succeeded" if seq % 2 else "node.started",
            "node_id": f"n{seq}",
            "ts": now,
            "data": {"attempt": 1, "output": {"x": seq}} if seq % 2 else {"attempt": 1},
            "trace_id": "",
            "workflow_id": "wf-" + execution_id[:8],
            "tenant_id": "default",
        }
        for seq in range(count)
    ]


async def main_async(args: argparse.Namespace) -> None:
    import libs.common.rabbitmq
    from libs.common.rabbitmq import DEAD_LETTER_EXCHANGE, TOPIC_EXCHANGES, RabbitBus
    from services.workflow.relay import OutboxRelay

    print(f"tree: {Path(libs.common.rabbitmq.__file__).parents[2]}", flush=True)
    prefix = f"relaybench{uuid.uuid4().hex[:8]}"
    bus = RabbitBus(RABBIT_URL, prefix=prefix)
    await bus.connect()
    relay = OutboxRelay.__new__(OutboxRelay)  # the publish only: no sessions, no loops
    relay._bus = bus
    relay.published = 0
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    rounds = [
        [(traceparent, events(2, uuid.uuid4().hex)) for _ in range(EXECUTIONS_PER_ROUND)]
        for _ in range(50)
    ]
    try:
        for groups in rounds[:10]:
            await relay._publish(groups)  # warm-up
        figures = []
        for _ in range(args.rounds):
            start = time.process_time()
            for index in range(ROUNDS_PER_FIGURE):
                await relay._publish(rounds[index % len(rounds)])
            elapsed = time.process_time() - start
            figures.append(elapsed / (ROUNDS_PER_FIGURE * EXECUTIONS_PER_ROUND * 2) * 1e6)
        print(
            "relay publish, us CPU per event: "
            + " ".join(f"{figure:.1f}" for figure in figures)
            + f"; min {min(figures):.1f}",
            flush=True,
        )
    finally:
        assert bus._connection is not None
        channel = await bus._connection.channel()
        for name in (*TOPIC_EXCHANGES, DEAD_LETTER_EXCHANGE):
            await channel.exchange_delete(bus.broker_name(name))
        await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent))
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    import services.workflow.relay  # noqa: F401  (the tree's, before engine puts ours first)

    sys.path.insert(1, str(Path(__file__).resolve().parent))
    from engine import calibration_ms

    print(f"calibration: {calibration_ms():.0f} ms (~175 ms at full speed)", flush=True)
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
