"""executions.forked_from_execution_id / forked_from_node: a fork's link to the execution and
node it was forked from, in columns (it was encoded in `trigger` as
`fork:<execution id, 22 base64url characters>/<node id>`); the forks of an execution are
found by an index. Existing forks are moved over: their trigger becomes `fork` (issue #15).

Revision ID: 0020_cag
Revises: 0019_b15d
Create Date: 2026-12-02 14:20:00
"""

from __future__ import annotations

import base64
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0020_cag"
down_revision = "0019_b15d"
branch_labels = None
depends_on = None

_PREFIX = "fork:"


def _decoded(trigger: str) -> tuple[str, str] | None:
    """(execution id, node id) of an old fork trigger; None for anything else."""
    if not trigger.startswith(_PREFIX) or "/" not in trigger:
        return None
    packed, node_id = trigger.removeprefix(_PREFIX).split("/", 1)
    try:
        execution_id = str(uuid.UUID(bytes=base64.urlsafe_b64decode(packed + "==")))
    except ValueError:
        return None
    return execution_id, node_id


def _encoded(execution_id: str, node_id: str) -> str:
    packed = base64.urlsafe_b64encode(uuid.UUID(execution_id).bytes).decode().rstrip("=")
    return f"{_PREFIX}{packed}/{node_id}"


def upgrade() -> None:
    op.add_column("executions", sa.Column("forked_from_execution_id", sa.String(36)))
    op.add_column("executions", sa.Column("forked_from_node", sa.String(64)))
    op.create_index("ix_executions_forked_from", "executions", ["forked_from_execution_id"])
    bind = op.get_bind()
    rows = bind.execute(
        sa.text('SELECT id, "trigger" FROM executions WHERE "trigger" LIKE \'fork:%\'')
    ).all()
    for execution_id, trigger in rows:
        link = _decoded(trigger)
        if link is None:
            continue
        bind.execute(
            sa.text(
                "UPDATE executions SET forked_from_execution_id = :source, "
                "forked_from_node = :node, \"trigger\" = 'fork' WHERE id = :id"
            ),
            {"source": link[0], "node": link[1], "id": execution_id},
        )


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, forked_from_execution_id, forked_from_node FROM executions "
            "WHERE forked_from_execution_id IS NOT NULL"
        )
    ).all()
    for execution_id, source, node_id in rows:
        bind.execute(
            sa.text('UPDATE executions SET "trigger" = :trigger WHERE id = :id'),
            {"trigger": _encoded(source, node_id or ""), "id": execution_id},
        )
    op.drop_index("ix_executions_forked_from", table_name="executions")
    op.drop_column("executions", "forked_from_node")
    op.drop_column("executions", "forked_from_execution_id")
