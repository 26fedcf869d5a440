"""Tenant secrets: stored encrypted (AES-256-GCM, libs.common.secrets), resolved at dispatch.

The values never leave the workflow service except inside the context of a node attempt
whose params reference them; the API can create, list (names only) and delete them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import utcnow
from libs.common.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.common.secrets import SECRET_NAME, SecretBox, SecretsUnavailable
from services.workflow import repository as repo
from services.workflow.models import SecretRow

#: Largest secret value accepted (bytes, UTF-8).
MAX_SECRET_BYTES = 64 * 1024


class SecretStore:
    """Encrypts on write, decrypts at dispatch; without a key every operation is refused."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], key_b64: str) -> None:
        self.sessions = sessions
        # A key that is set but malformed fails the service's start-up, naming the variable.
        self._box = SecretBox(key_b64) if key_b64 else None

    def _require_box(self) -> SecretBox:
        if self._box is None:
            raise FailedPrecondition("secrets are not configured: set HEDDLE_SECRETS_KEY")
        return self._box

    async def put(self, tenant_id: str, name: str, value: str) -> tuple[SecretRow, bool]:
        """Create or replace; returns the row and whether it was created."""
        box = self._require_box()
        if not SECRET_NAME.match(name):
            raise InvalidArgument(
                "a secret name is 1-128 letters, digits or underscores, not starting with a digit",
                details=[{"field": "name"}],
            )
        if not value or len(value.encode()) > MAX_SECRET_BYTES:
            raise InvalidArgument(
                f"a secret value is 1 to {MAX_SECRET_BYTES} bytes", details=[{"field": "value"}]
            )
        now = utcnow()
        sealed = box.encrypt(tenant_id, name, value)
        async with self.sessions() as session, session.begin():
            row = await repo.get_secret(session, tenant_id, name)
            created = row is None
            if row is None:
                row = SecretRow(tenant_id=tenant_id, name=name, ciphertext=sealed, created_at=now)
                session.add(row)
            row.ciphertext = sealed
            row.updated_at = now
        return row, created

    async def list(self, tenant_id: str) -> Sequence[SecretRow]:
        async with self.sessions() as session:
            return await repo.list_secrets(session, tenant_id)

    async def delete(self, tenant_id: str, name: str) -> None:
        async with self.sessions() as session, session.begin():
            row = await repo.get_secret(session, tenant_id, name)
            if row is None:
                raise NotFound(f"secret {name!r} not found")
            await session.delete(row)

    async def resolve(self, tenant_id: str, names: set[str] | None) -> dict[str, str]:
        """Plain values of the named secrets (all of the tenant's when names is None).

        A name that does not exist raises NotFound (the node fails, naming it).
        """
        box = self._require_box()
        async with self.sessions() as session:
            rows = await repo.secrets_named(session, tenant_id, names)
        values: dict[str, str] = {}
        for row in rows:
            try:
                values[row.name] = box.decrypt(tenant_id, row.name, row.ciphertext)
            except SecretsUnavailable as error:
                raise FailedPrecondition(str(error)) from error
        missing = sorted((names or set()) - values.keys())
        if missing:
            raise NotFound(f"secret(s) not found: {', '.join(missing)}")
        return values
