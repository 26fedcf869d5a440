"""One embedded stack for the files and claim-check tests (package scope: started once)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from libs.cli.stack import Stack, start_stack
from tests.security.support import bearer

MB = 1024 * 1024
CLAIM_CHECK_BYTES = 64 * 1024


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Path]]:
    root = tmp_path_factory.mktemp("files")
    artifacts = root / "artifacts"
    stack = await start_stack(
        {
            "database_url": f"sqlite+aiosqlite:///{root / 'heddle.db'}",
            "artifact_url": f"file://{artifacts}",
            "max_body_bytes": 2 * MB,
            "files_max_bytes": 4 * MB,
            # "large": tests/files/test_large_file.py's tenant.
            "files_tenant_max_bytes": {"small": 1000, "large": 64 * MB},
            "files_quota_bytes": 10 * MB,
            "claim_check_bytes": CLAIM_CHECK_BYTES,
            "http_allow_hosts": ["127.0.0.1"],
        },
        ephemeral_ports=True,
    )
    try:
        yield stack, artifacts
    finally:
        await stack.stop()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def http(running: tuple[Stack, Path]) -> AsyncIterator[httpx.AsyncClient]:
    stack, _ = running
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=60, headers=bearer(stack.admin_key)
    ) as client:
        yield client
