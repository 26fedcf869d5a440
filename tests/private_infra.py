"""Private Redis, PostgreSQL and RabbitMQ servers that a test may stop and start at will.

The machine's shared servers serve every test running at the same time: an outage test must
never stop them. These run on free ports, with their data in a temporary folder, and are
stopped when the test (or module) that started them ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import aio_pika
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


class PrivateRabbitMQ:
    """A RabbitMQ node of its own (its own node name, ports and data folder), so that a test
    may stop and start the broker's application (`stop_app` / `start_app`, as an operator's
    restart) without touching the shared one. `remove()` halts the node and deletes the folder.

    rabbitmq-server runs as the `rabbitmq` OS user: the folder is made here and given to it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="heddle-rabbit-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"heddle-{self.port}@localhost"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        plugins = self.root / "enabled_plugins"
        plugins.write_text("[].\n")  # no management plugin: no fixed HTTP port
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            # Not the machine's rabbitmq.conf: it pins the listener to 5672.
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
        }

    async def start(self) -> None:
        """Boot the node and wait until it accepts AMQP connections."""
        assert self._process is None, "already running"
        env = self._env()
        if os.geteuid() == 0:
            for path in (self.root, *self.root.iterdir()):
                shutil.chown(path, "rabbitmq", "rabbitmq")
            self.root.chmod(0o755)
        self._process = await asyncio.to_thread(
            subprocess.Popen,
            ["rabbitmq-server"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        await self.wait_accepting(timeout=90)

    async def wait_accepting(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        async def accepts() -> bool:
            assert self._process is not None and self._process.poll() is None, "rabbitmq died"
            try:
                connection = await aio_pika.connect(self.url, timeout=2)
            except Exception:
                return False
            await connection.close()
            return True

        await assert_eventually(accepts, timeout=timeout, interval=0.2, message="rabbit not up")

    async def ctl(self, *args: str) -> None:
        """rabbitmqctl against this node (`stop_app`, `start_app`)."""
        done = await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "-n", self.node, *args],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {output[-2000:]}")

    async def remove(self) -> None:
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                with contextlib.suppress(Exception):
                    await self.ctl("stop")
                try:
                    await asyncio.to_thread(process.wait, 30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    await asyncio.to_thread(process.wait)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
