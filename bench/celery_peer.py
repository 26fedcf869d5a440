"""Celery's side of bench/http_path.py: the same workloads as Celery 5.x runs them.

RabbitMQ broker, Redis results, a prefork worker with 2 processes (started by the bench as
`celery -A celery_peer worker --pool prefork -c 2` in this directory). A fan-out is a chord
(a group of noops and a merge callback), a chain is a chain of noops.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
RESULT_URL = os.environ.get("BENCH_CELERY_RESULTS", "redis://127.0.0.1:6379/14")

app = Celery("celery_peer", broker=BROKER_URL, backend=RESULT_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "heddle-bench"),
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop(value: Any = None) -> Any:
    return value


@app.task(name="merge")
def merge(values: list[Any]) -> int:
    return len(values)
