"""executions and node_runs: fillfactor 80, room on each page for the hot path's updates

Every step of an execution updates its executions row (the fence: last_seq, status) and its
node rows (a node's start, its end: the row grows by its output, inputs and attempts). An
update stays HOT (no new index entries, the dead version pruned on the page) only when the
new version fits on the row's page; at the default fillfactor (100) inserted pages are full.
Measured with bench/pg_batch.py (3000 executions of 10 nodes, 8 writers, group commit, 2
interleaved pairs): HOT updates node_runs 47 -> 67 %, executions 93-94 -> 99-100 %, backends
CPU per chain step 157 / 155 -> 143 / 133 us. A storage parameter only: pages written from
now on keep the room, nothing is rewritten (PostgreSQL only; SQLite has no such setting).

Revision ID: 0025_p17
Revises: 0024_p17
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0025_p17"
down_revision = "0024_p17"
branch_labels = None
depends_on = None

_TABLES = ("executions", "node_runs")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
