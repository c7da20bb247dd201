"""PostgreSQL: compress the stored JSON documents with lz4 instead of pglz.

A settlement stores its request and its result with the bilingual trace (10–20 kB
of JSON). pglz compression of those values was the largest single cost of the
settlement transaction in the server (about an eighth of its CPU); lz4 compresses
them several times faster. Servers built without lz4 keep pglz. SQLite: nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 04:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_DOCUMENTS = {
    "settlements": ("request_json", "result_json"),
    "messages": ("response_json",),
    "visit_fees": ("line_json",),
    "api_idempotency": ("response_json",),
}


def _set_compression(method: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in _DOCUMENTS.items():
        changes = ", ".join(f"ALTER COLUMN {column} SET COMPRESSION {method}" for column in columns)
        op.execute(
            f"DO $$ BEGIN ALTER TABLE {table} {changes}; "
            "EXCEPTION WHEN feature_not_supported THEN RAISE NOTICE 'lz4 not available: % keeps pglz', "
            f"'{table}'; END $$"
        )


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
