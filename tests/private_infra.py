"""Private Redis and PostgreSQL servers that a test may stop and start at will.

The machine's shared servers serve every test running at the same time: an outage test must
never stop them. These run on free ports, with their data in a temporary folder, and are
stopped when the test (or module) that started them ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import redis.asyncio

from libs.cli.topology import free_port
from tests.helpers import assert_eventually

PG_BIN = Path(os.environ.get("HEDDLE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PrivateRedis:
    """`redis-server` on a free port, without persistence (a restart starts empty)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert self._process is None, "already running"
        self._process = await asyncio.to_thread(
            subprocess.Popen,
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        async def answers() -> bool:
            assert self._process is not None and self._process.poll() is None, "redis died"
            client = redis.asyncio.Redis.from_url(self.url)
            try:
                return bool(await client.ping())
            except redis.exceptions.RedisError:
                return False
            finally:
                await client.aclose()

        await assert_eventually(answers, timeout=20, interval=0.05, message="redis not up")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


def _as_postgres(*command: str) -> None:
    # PostgreSQL refuses to run as root: its tools run as the `postgres` OS user.
    if os.geteuid() == 0:
        command = ("runuser", "-u", "postgres", "--", *command)
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {output[-2000:]}")


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb in a temporary folder) on a free port.

    The folder is made here, not under pytest's tmp_path: the `postgres` user must reach it.
    `remove()` stops the server and deletes the folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="heddle-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.running = False

    async def remove(self) -> None:
        try:
            await self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL the services take."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        await asyncio.to_thread(
            _as_postgres,
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        )

    async def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        await asyncio.to_thread(
            _as_postgres,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "start",
        )
        self.running = True

        async def accepts() -> bool:
            try:
                connection = await asyncpg.connect(self.dsn, timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return False
            await connection.close()
            return True

        await assert_eventually(accepts, timeout=30, interval=0.1, message="postgres not up")

    async def stop(self) -> None:
        if not self.running:
            return
        await asyncio.to_thread(
            _as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"
        )
        self.running = False
