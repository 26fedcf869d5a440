"""Memory snapshots on demand, for benchmarks that look for memory kept after work ended.

Off by default. With HEDDLE_DEBUG_TRACEMALLOC=<frames> (a number of frames to keep per
allocation, e.g. 1 or 8) a service process starts tracemalloc when it starts, and each SIGUSR1
writes, after a full `gc.collect()`, into HEDDLE_DEBUG_TRACEMALLOC_DIR (default: the temp
directory):

- `<service>-<pid>-<n>.tracemalloc`: the tracemalloc snapshot (`tracemalloc.Snapshot.load`);
- `<service>-<pid>-<n>.json`: live objects by type name (`gc.get_objects()`), the traced
  memory, and the counts any registered probe reports (e.g. the engine's registries).

With HEDDLE_DEBUG_MALLOC_STATS=1 (no tracemalloc, no slow-down) each SIGUSR2 writes to the
process's stderr, after a `gc.collect()`, CPython's allocator statistics
(`sys._debugmallocstats()`: pymalloc arenas, pools and blocks in use) and glibc's per-arena
figures (`malloc_stats()`: system bytes and in-use bytes per arena): where the RSS of a
quiet process is, in the Python heap or in malloc's.

Each file is written under a temporary name and renamed, so a reader that sees it sees all of
it. Nothing of this runs unless the variable is set: the hot path never sees it. It is for
bench/waiters.py --tracemalloc; tracemalloc itself slows the process down several times.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import signal
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ENV = "HEDDLE_DEBUG_TRACEMALLOC"
DIR_ENV = "HEDDLE_DEBUG_TRACEMALLOC_DIR"
STATS_ENV = "HEDDLE_DEBUG_MALLOC_STATS"

#: name -> a function returning counts worth reporting (registered by the service).
_probes: dict[str, Callable[[], dict[str, int]]] = {}
_taken = 0


def enabled() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def add_probe(name: str, probe: Callable[[], dict[str, int]]) -> None:
    """Report probe()'s counts in every snapshot (a no-op unless snapshots are enabled)."""
    if enabled():
        _probes[name] = probe


def type_counts() -> dict[str, int]:
    """Live objects tracked by the garbage collector, by type name."""
    counts: collections.Counter[str] = collections.Counter(
        type(obj).__qualname__ for obj in gc.get_objects()
    )
    return dict(counts)


def write_snapshot(service: str) -> Path:
    """Collect, then write the tracemalloc snapshot and the object counts; the JSON's path."""
    global _taken
    _taken += 1
    gc.collect()
    folder = Path(os.environ.get(DIR_ENV) or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{service}-{os.getpid()}-{_taken}"
    snapshot = tracemalloc.take_snapshot()
    snapshot.dump(f"{stem}.tracemalloc.part")
    os.replace(f"{stem}.tracemalloc.part", f"{stem}.tracemalloc")
    current, peak = tracemalloc.get_traced_memory()
    report = {
        "traced_bytes": current,
        "traced_peak_bytes": peak,
        "types": type_counts(),
        "probes": {name: probe() for name, probe in _probes.items()},
    }
    Path(f"{stem}.json.part").write_text(json.dumps(report))
    os.replace(f"{stem}.json.part", f"{stem}.json")
    return Path(f"{stem}.json")


def write_malloc_stats() -> None:
    """Collect, then print CPython's and glibc's allocator statistics to stderr."""
    gc.collect()
    sys.stderr.flush()
    sys._debugmallocstats()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    with contextlib.suppress(AttributeError):  # not glibc
        libc.malloc_stats()


def install(service: str) -> None:
    """In a running event loop: start tracemalloc and snapshot on SIGUSR1, and print the
    allocators' statistics on SIGUSR2, each when enabled."""
    if os.environ.get(STATS_ENV, "") not in ("", "0"):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, write_malloc_stats)
    if not enabled():
        return
    frames = int(os.environ[ENV]) if os.environ[ENV].isdigit() else 1
    tracemalloc.start(max(1, frames))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, write_snapshot, service)
