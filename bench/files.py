"""Files through the gateway: upload and download MB/s, and the RSS each process grows by while
a large file (200 MB by default) goes through a 3-node workflow (the file input, a
`stream_transform` that streams, a streaming write), on the embedded stack (one process) and
on the production topology (gateway, 2 workflow and 3 node replicas... as processes, on
PostgreSQL, RabbitMQ and Redis). The acceptance bound: each process grows by < 64 MB.

    .venv/bin/python bench/files.py [--size-mb 200] [--topology embedded|production|both]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import _database, _drop, calibration_ms  # noqa: E402
from libs.cli.stack import start_stack  # noqa: E402
from libs.cli.topology import default_topology, spawn_topology  # noqa: E402

MB = 1024 * 1024
CHUNK = b"abcdefghij" * 6554  # ~64 KB
WORKFLOW = {
    "inputs": {"doc": {"type": "file"}},
    "nodes": [
        {"id": "read", "type": "input"},
        {
            "id": "shout",
            "type": "stream_transform",
            "params": {"source": "{{ inputs.doc }}", "operation": "upper"},
        },
        {
            "id": "write",
            "type": "stream_transform",
            "params": {"source": "{{ shout.file }}", "operation": "identity"},
        },
    ],
    "edges": [{"source": "read", "target": "shout"}, {"source": "shout", "target": "write"}],
}


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Peaks:
    """Samples the RSS of named pids every 20 ms in a thread: baseline and peak of each."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.baseline = {name: rss(pid) for name, pid in pids.items()}
        self.peak = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss(pid))
            time.sleep(0.02)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict[str, float]:
        return {name: (self.peak[name] - self.baseline[name]) / MB for name in self.pids}


async def body(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = CHUNK[: size - sent]
        sent += len(piece)
        yield piece


async def run_once(
    base_url: str, key: str, size: int, peaks: Callable[[], Peaks]
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as http:
        created = await http.post("/api/v1/workflows", json={**WORKFLOW, "name": "files-bench"})
        assert created.status_code == 201, created.text
        with peaks() as sampled:
            start = time.perf_counter()
            uploaded = await http.post("/api/v1/files", params={"name": "big"}, content=body(size))
            upload_s = time.perf_counter() - start
            assert uploaded.status_code == 201, uploaded.text
            start = time.perf_counter()
            answer = await http.post(
                f"/api/v1/workflows/{created.json()['id']}/run",
                params={"wait": 300},
                json={"inputs": {"doc": uploaded.json()["id"]}},
            )
            pipeline_s = time.perf_counter() - start
            assert answer.status_code == 200, answer.text
            detail = await http.get(f"/api/v1/executions/{answer.json()['id']}")
            execution = detail.json()
            assert execution["status"] == "succeeded", execution
            start = time.perf_counter()
            digest = hashlib.sha256()
            received = 0
            async with http.stream("GET", uploaded.json()["content_url"]) as download:
                async for chunk in download.aiter_bytes():
                    digest.update(chunk)
                    received += len(chunk)
            download_s = time.perf_counter() - start
            assert received == size and digest.hexdigest() == uploaded.json()["sha256"]
            events = await http.get(
                f"/api/v1/executions/{execution['id']}/events", params={"format": "json"}
            )
    return {
        "upload_mb_s": size / MB / upload_s,
        "download_mb_s": size / MB / download_s,
        "pipeline_s": pipeline_s,
        "detail_bytes": len(detail.content),
        "events_bytes": len(events.content),
        "growth": sampled.growth(),
    }


def report(label: str, size: int, figures: dict[str, Any]) -> None:
    print(f"\n== {label}: {size // MB} MB")
    print(
        f"upload {figures['upload_mb_s']:.1f} MB/s, download {figures['download_mb_s']:.1f} MB/s"
        f" through the gateway; the 3-node workflow took {figures['pipeline_s']:.1f} s"
    )
    print(
        f"execution detail {figures['detail_bytes']} bytes, events {figures['events_bytes']} bytes"
    )
    worst = 0.0
    for name, grew in sorted(figures["growth"].items()):
        worst = max(worst, grew)
        print(f"  RSS growth {name:<12} {grew:7.1f} MB")
    print(f"  largest growth {worst:.1f} MB: {'OK' if worst < 64 else 'OVER'} (bound 64 MB)")


async def embedded(size: int, tmp: str) -> None:
    stack = await start_stack(
        {
            "database_url": f"sqlite+aiosqlite:///{tmp}/bench.db",
            "artifact_url": f"file://{tmp}/artifacts",
            "files_max_bytes": size + MB,
            "log_level": "WARNING",
        },
        ephemeral_ports=True,
    )
    try:
        pid = os.getpid()
        figures = await run_once(
            stack.gateway_url,
            stack.admin_key,
            size,
            lambda: Peaks({"embedded": pid}),
        )
    finally:
        await stack.stop()
    report("embedded stack (one process: gateway, workflow, node and the client)", size, figures)


async def production(size: int, tmp: str) -> None:
    database_url, name = await _database("postgres", tmp)
    key = f"hk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    specs = default_topology(
        database_url=database_url,
        log_level="WARNING",
        extra_env={
            "HEDDLE_ARTIFACT_URL": f"file://{tmp}/artifacts",
            "HEDDLE_FILES_MAX_BYTES": str(size + MB),
            "HEDDLE_BOOTSTRAP_API_KEY": key,
            "HEDDLE_BROKER_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        },
    )
    topology = spawn_topology(specs, Path(tmp) / "logs")
    try:
        await topology.wait_healthy(timeout_s=120)
        watched = [s.name for s in specs if s.name.split("-")[0] in ("gateway", "workflow", "node")]
        figures = await run_once(
            topology.gateway_url,
            key,
            size,
            lambda: Peaks({name: topology.pid(name) for name in watched}),
        )
    finally:
        topology.stop(grace=5)
        await _drop(name)
    report("production topology (processes, PostgreSQL, RabbitMQ, Redis)", size, figures)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--topology", choices=["embedded", "production", "both"], default="both")
    args = parser.parse_args()
    size = args.size_mb * MB
    print(f"machine speed: calibration loop {calibration_ms():.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        if args.topology in ("embedded", "both"):
            await embedded(size, tmp)
        if args.topology in ("production", "both"):
            await production(size, tmp)
    print(f"machine speed: calibration loop {calibration_ms():.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
