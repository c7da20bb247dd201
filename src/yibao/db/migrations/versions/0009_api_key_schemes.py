"""Each gateway key names its signature scheme: _api_* HMAC-SHA1 (as before) or x-tif-* SHA-256.

Existing keys keep the _api_* scheme.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scheme", sa.String(length=8), nullable=False, server_default="api"))
        batch_op.create_check_constraint(op.f("ck_api_keys_scheme"), "scheme IN ('api', 'tif')")


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_api_keys_scheme"), type_="check")
        batch_op.drop_column("scheme")
