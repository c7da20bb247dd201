"""Settlement indexes for the queries that exist: by visit, not by msgid.

Every settlement wrote five secondary index entries. ``ix_settlements_msgid`` served
no query (a msgid is looked up in ``messages``), and ``ix_settlements_fixmedins_code``
duplicated the leading column of ``ix_settlements_inst_time``; while the admission's
settlements (2304/2305: by ``mdtrt_id``) had no index and scanned the institution's.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 05:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_settlements_msgid", table_name="settlements")
    op.drop_index("ix_settlements_fixmedins_code", table_name="settlements")
    op.create_index("ix_settlements_mdtrt_id", "settlements", ["mdtrt_id"])


def downgrade() -> None:
    op.drop_index("ix_settlements_mdtrt_id", table_name="settlements")
    op.create_index("ix_settlements_fixmedins_code", "settlements", ["fixmedins_code"])
    op.create_index("ix_settlements_msgid", "settlements", ["msgid"])
