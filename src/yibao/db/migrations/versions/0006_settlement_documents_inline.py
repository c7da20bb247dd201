"""PostgreSQL: keep a settlement's documents in its own row, compressed, not in TOAST.

A settlement's result with its trace is 10–20 kB of JSON, about 4 kB once compressed.
With the default target of 2 kB per row PostgreSQL moved it out of line — TOAST
chunks, each a heap row and an index entry, written with every settlement and read
back on every replay. A target of a whole page (8160 bytes) compresses the result in
place; only a value too large for the page still goes out of line. SQLite: nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 07:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: The largest target PostgreSQL accepts with 8 kB pages.
TOAST_TUPLE_TARGET = 8160


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE settlements SET (toast_tuple_target = {TOAST_TUPLE_TARGET})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE settlements RESET (toast_tuple_target)")
