"""A real local S3-compatible server process for tests: moto's server (`moto.server`), on a
free port, started by a session fixture and stopped when the session ends."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from libs.cli.topology import free_port
from libs.common.artifacts import ArtifactSettings

ACCESS_KEY = "heddle-test"
SECRET_KEY = "heddle-test-secret"


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self._process.poll() is None, "the S3 server (moto) exited at start"
            try:
                if httpx.get(self.endpoint + "/moto-api/", timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the S3 server (moto) did not answer in 30 s"
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

    def settings(self, bucket: str, prefix: str = "") -> ArtifactSettings:
        return ArtifactSettings(
            url=f"s3://{bucket}/{prefix}".rstrip("/"),
            s3_endpoint=self.endpoint,
            s3_access_key=ACCESS_KEY,  # type: ignore[arg-type]
            s3_secret_key=SECRET_KEY,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()
