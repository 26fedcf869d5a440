"""A PostgreSQL without a connection slot left is a dependency unavailable now (gRPC
UNAVAILABLE, HTTP 503), not an internal error: seen as a 500 "DBAPIError" when the shared
server reached max_connections under a benchmark."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from libs.common.db import create_engine
from libs.common.grpcutil import is_unavailable
from tests.conftest import POSTGRES_ADMIN_DSN

pytestmark = pytest.mark.integration


async def test_no_connection_slot_left_is_unavailable() -> None:
    # A role limited to 0 connections gets the same refusal (SQLSTATE 53300) as a server
    # at max_connections, without taking the shared server's slots.
    role = f"heddle_t_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        host = POSTGRES_ADMIN_DSN.split("@", 1)[1].rsplit("/", 1)[0]
        engine = create_engine(f"postgresql+asyncpg://{role}@{host}/postgres")
        try:
            with pytest.raises(DBAPIError) as caught:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        finally:
            await engine.dispose()
        assert "too many connections" in str(caught.value)
        assert is_unavailable(caught.value)
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
