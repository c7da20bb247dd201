"""Messages scoped by their sender, and each gateway signature accepted once.

``messages`` was keyed by ``msgid`` alone, so one institution could take (and then read or
undo through) another's msgid. The key becomes (``caller``, ``msgid``); existing rows get
the institution of the settlement they made, or '' where they made none.

``gateway_signatures`` records every accepted request signature until its replay window
has passed, so a captured set of signed headers cannot carry a second body.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("caller", sa.String(length=48), nullable=False, server_default=""))
    op.execute(
        "UPDATE messages SET caller = (SELECT s.fixmedins_code FROM settlements s WHERE s.setl_id = messages.setl_id)"
        " WHERE setl_id IS NOT NULL"
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column("caller", server_default=None)
        batch_op.drop_constraint("pk_messages", type_="primary")
        batch_op.create_primary_key("pk_messages", ["caller", "msgid"])
    op.create_table(
        "gateway_signatures",
        sa.Column("access_key", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("access_key", "signature", name=op.f("pk_gateway_signatures")),
    )
    with op.batch_alter_table("gateway_signatures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gateway_signatures_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("gateway_signatures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_signatures_expires_at"))
    op.drop_table("gateway_signatures")
    # Two institutions' messages may now share a msgid: the older design keeps one of them.
    op.execute(
        "DELETE FROM messages WHERE EXISTS (SELECT 1 FROM messages o WHERE o.msgid = messages.msgid"
        " AND o.caller < messages.caller)"
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint("pk_messages", type_="primary")
        batch_op.create_primary_key("pk_messages", ["msgid"])
        batch_op.drop_column("caller")
