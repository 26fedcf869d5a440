"""Give the heap a quiet process freed back to the OS: glibc's `malloc_trim(0)`, Linux only.

After a burst (thousands of executions started and resumed at once) a replica has freed
what the burst held, but glibc keeps freed chunks in its arenas (one per thread that
allocated: the event loop, gRPC's and the driver's threads) and returns only the top of each
heap, so the process's RSS stays at the burst's high-water. `malloc_trim(0)` walks every
arena and gives the freed pages back (madvise), without moving anything that is in use.

`QuietTrim` calls it once the process has gone quiet after doing some work: every
`interval_s` it reads the process's CPU time; if the last interval used at most
`quiet_fraction` of a core and the process used at least `busy_cpu_s` of CPU since the last
trim, it trims (in a thread: ctypes releases the GIL, and a trim of a few hundred MB takes
milliseconds). A process that stays busy never trims (its freed memory is reused soon), an
idle one trims once per burst. Where there is no glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import sys
import time
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)

__all__ = ["QuietTrim", "malloc_trim", "rss_kb"]


@cache
def _libc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (e.g. musl has no malloc_trim)
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def malloc_trim() -> bool:
    """Return freed heap memory to the OS (`malloc_trim(0)`); False where it is not glibc."""
    trim = _libc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def rss_kb() -> int:
    """This process's resident set size in kB (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return 0


class QuietTrim:
    """Trim the heap once the process goes quiet after a burst (see the module's docstring).

    `cpu` is the clock it reads (the process's CPU time by default; a test passes its own).
    """

    def __init__(
        self,
        *,
        busy_cpu_s: float,
        quiet_fraction: float,
        cpu: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.busy_cpu_s = busy_cpu_s
        self.quiet_fraction = quiet_fraction
        self._cpu = cpu
        self._clock = clock
        self._last_cpu = cpu()
        self._last_at = clock()
        self._since_trim = 0.0
        #: Trims done, and the kB of RSS the last one gave back (for logs and tests).
        self.trims = 0
        self.last_freed_kb = 0

    def due(self) -> bool:
        """Take a reading: True when the last interval was quiet after enough work."""
        cpu, now = self._cpu(), self._clock()
        used, elapsed = cpu - self._last_cpu, now - self._last_at
        self._last_cpu, self._last_at = cpu, now
        self._since_trim += used
        if elapsed <= 0 or used > self.quiet_fraction * elapsed:
            return False
        return self._since_trim >= self.busy_cpu_s

    async def check(self) -> bool:
        """One reading, and a trim if due; True if it trimmed."""
        if not self.due():
            return False
        before = rss_kb()
        if not await asyncio.to_thread(malloc_trim):
            return False
        # The trim's own CPU is not work: the next burst is counted from here.
        self._since_trim = 0.0
        self._last_cpu = self._cpu()
        self.trims += 1
        self.last_freed_kb = max(0, before - rss_kb())
        log.info(
            "malloc_trim after a burst",
            extra={"rss_kb": before - self.last_freed_kb, "freed_kb": self.last_freed_kb},
        )
        return True
