"""A real Chroma server process for tests (``chroma run``, from the chromadb package), on a
free port with a temporary directory, started by a session fixture."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from libs.cli.topology import free_port

CHROMA = Path(sys.executable).parent / "chroma"


class ChromaServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="heddle-chroma-")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [str(CHROMA), "run", "--path", self._dir.name, "--host", "127.0.0.1"]
        self._process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self._process.poll() is None, "the Chroma server exited at start"
            try:
                if httpx.get(self.url + "/api/v2/heartbeat", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Chroma server did not answer in 30 s"
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._dir.cleanup()


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    server = ChromaServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
