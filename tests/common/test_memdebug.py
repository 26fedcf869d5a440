"""HEDDLE_DEBUG_TRACEMALLOC (libs/common/memdebug.py): off by default; when set, SIGUSR1
writes a tracemalloc snapshot and the live-object counts with the registered probes'."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tracemalloc
from pathlib import Path

import pytest

from libs.common import memdebug


def _written(folder: Path) -> list[Path]:
    return list(folder.glob(f"svc-{os.getpid()}-*.json"))


async def test_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(memdebug.ENV, raising=False)
    memdebug.install("svc")
    assert not tracemalloc.is_tracing()
    memdebug.add_probe("p", lambda: {"n": 1})
    assert "p" not in memdebug._probes


async def test_sigusr1_writes_a_snapshot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(memdebug.ENV, "2")
    monkeypatch.setenv(memdebug.DIR_ENV, str(tmp_path))
    monkeypatch.setattr(memdebug, "_probes", {})
    loop = asyncio.get_running_loop()
    memdebug.install("svc")
    try:
        assert tracemalloc.is_tracing()
        memdebug.add_probe("engine", lambda: {"runners": 3})
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(500):
            written = _written(tmp_path)
            if written:
                break
            await asyncio.sleep(0.01)
        assert len(written) == 1, written
        report = json.loads(written[0].read_text())
        assert report["probes"] == {"engine": {"runners": 3}}
        assert report["types"]["function"] > 0
        assert report["traced_bytes"] > 0
        snapshot = tracemalloc.Snapshot.load(str(written[0].with_suffix(".tracemalloc")))
        assert snapshot.traceback_limit == 2
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        tracemalloc.stop()


async def test_sigusr2_prints_the_allocators_statistics(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(memdebug.ENV, raising=False)
    monkeypatch.setenv(memdebug.STATS_ENV, "1")
    loop = asyncio.get_running_loop()
    memdebug.install("svc")
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(500):
            await asyncio.sleep(0.01)
            err = capfd.readouterr().err
            if err:
                break
        # CPython's pymalloc figures, then glibc's per-arena ones.
        assert "# arenas allocated total" in err
        assert "Arena 0:" in err
        assert not tracemalloc.is_tracing()
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
