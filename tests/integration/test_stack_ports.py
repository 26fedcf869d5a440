"""The embedded stack survives a port taken between choosing it and binding it."""

from __future__ import annotations

import gc
import socket
import warnings
from pathlib import Path

import httpx
import pytest

from libs.cli import stack as stack_module


@pytest.mark.parametrize("victim", range(6))
async def test_a_port_taken_before_binding_restarts_the_stack_on_others(
    victim: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever service finds its port taken, the stack comes up on other ports, and the
    failed start leaves nothing open behind it (no unclosed database connection)."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_port = stack_module.free_port
    handed_out: list[int] = []

    def free_port(host: str = "127.0.0.1") -> int:
        # The victim-th port handed out is already in use when its service binds.
        port = taken if len(handed_out) == victim else real_free_port(host)
        handed_out.append(port)
        return port

    monkeypatch.setattr(stack_module, "free_port", free_port)
    try:
        running = await stack_module.start_stack(
            {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'heddle.db'}"},
            ephemeral_ports=True,
        )
    finally:
        squatter.close()
    try:
        assert handed_out.count(taken) == 1
        assert taken not in running.ports.values()
        async with httpx.AsyncClient(base_url=running.gateway_url) as client:
            assert (await client.get("/readyz")).status_code == 200
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.collect()
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not leaks, leaks
    finally:
        await running.stop()
