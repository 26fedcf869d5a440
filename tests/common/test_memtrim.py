"""libs/common/memtrim.py: malloc_trim gives freed heap back to the OS, and QuietTrim calls it
once per burst, when the process has gone quiet after work (not while busy, not when idle)."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from libs.common import memtrim


def test_malloc_trim_returns_freed_heap_chunks_to_the_os() -> None:
    # The services run on Linux with glibc, as this machine does.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 MB in 4 kB chunks (below the mmap threshold: from the heap), written so that they
    # are resident; all freed but the last, which pins the top of the heap: free() cannot
    # shrink it, the freed chunks stay in the process, as after a burst.
    chunks = [libc.malloc(4096) for _ in range(16384)]
    for chunk in chunks:
        ctypes.memset(chunk, 1, 4096)
    for chunk in chunks[:-1]:
        libc.free(chunk)
    kept = memtrim.rss_kb()
    try:
        assert memtrim.malloc_trim()
        assert kept - memtrim.rss_kb() > 32 * 1024
    finally:
        libc.free(chunks[-1])


class Clocks:
    def __init__(self) -> None:
        self.cpu = 0.0
        self.now = 0.0

    def tick(self, seconds: float, cpu: float) -> None:
        self.now += seconds
        self.cpu += cpu


async def test_quiet_trim_trims_once_per_burst_when_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_trim() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(memtrim, "malloc_trim", fake_trim)
    clocks = Clocks()
    trim = memtrim.QuietTrim(
        busy_cpu_s=2.0, quiet_fraction=0.05, cpu=lambda: clocks.cpu, clock=lambda: clocks.now
    )

    clocks.tick(10, cpu=0.1)  # idle from the start: no work to give back
    assert not await trim.check()
    clocks.tick(10, cpu=8.0)  # a burst: busy, no trim while it runs
    assert not await trim.check()
    clocks.tick(10, cpu=6.0)
    assert not await trim.check()
    clocks.tick(10, cpu=0.2)  # quiet after the burst: one trim
    assert await trim.check()
    for _ in range(3):  # still quiet: nothing new to give back
        clocks.tick(10, cpu=0.2)
        assert not await trim.check()
    assert calls == [1]
    assert trim.trims == 1

    clocks.tick(10, cpu=3.0)  # the next burst, then quiet: trimmed again
    assert not await trim.check()
    clocks.tick(10, cpu=0.1)
    assert await trim.check()
    assert len(calls) == 2


async def test_quiet_trim_never_trims_a_busy_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_trim() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(memtrim, "malloc_trim", fake_trim)
    clocks = Clocks()
    trim = memtrim.QuietTrim(
        busy_cpu_s=2.0, quiet_fraction=0.05, cpu=lambda: clocks.cpu, clock=lambda: clocks.now
    )
    for _ in range(20):
        clocks.tick(10, cpu=1.0)  # 10 % of a core, steadily: its freed memory is reused
        assert not await trim.check()
    assert calls == []
