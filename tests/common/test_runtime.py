"""A service process's heap after start-up (libs/common/runtime.py): what start-up made is
frozen, out of the garbage collector's reach, so a full collection under load walks only
what was made since (before, 100,000-170,000 objects: a gateway's gen2 pause of 0.8-0.9 s
at load 12 in the middle of a 100 submits/s run). Each case runs in a process of its own:
freezing the test worker's heap would keep its garbage from every later test."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from libs.common import memdebug

_INIT = """
import gc
from libs.common.runtime import init_process
from libs.common.settings import CommonSettings

made_before = [object() for _ in range(100)]
gc.collect()
before = len(gc.get_objects())
init_process("svc", CommonSettings(), metrics=False)
print(before, gc.get_freeze_count(), len(gc.get_objects()))
"""

_SERVE = """
import asyncio, gc, os, signal
from libs.common.runtime import run_service
from libs.common.settings import CommonSettings

class Service:
    async def stop(self):
        pass

async def serve(settings):
    # What a service's wiring builds (pools, channels, registries), checked once served.
    wiring = [[n] for n in range(1000)]  # lists: tracked by the collector
    def check():
        tracked = {id(o) for o in gc.get_objects()}
        print(sum(id(part) in tracked for part in wiring), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    asyncio.get_running_loop().call_later(0.05, check)
    return Service()

run_service("svc", CommonSettings(event_loop="asyncio"), serve)
"""


def _run(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[-2]


def test_init_process_freezes_what_the_imports_made() -> None:
    before, frozen, left = map(int, _run(_INIT).split())
    assert frozen >= before > 10_000
    assert left < frozen // 20  # a later collection walks only what came after


def test_what_serving_built_is_frozen_too() -> None:
    assert _run(_SERVE) == "0"  # none of the wiring's objects left for the collector


def test_nothing_frozen_while_tracemalloc_debugging_counts_objects() -> None:
    # memdebug's live-object counts come from gc.get_objects(), which skips frozen objects.
    before, frozen, left = map(int, _run(_INIT, **{memdebug.ENV: "1"}).split())
    assert frozen == 0
    assert left >= before
