"""Institutions whose PIN pads verify the settlement PIN: their account payments carry no pin field.

Existing institutions keep the PIN checked by the platform.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 17:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("institutions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pin_by_terminal", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("institutions", schema=None) as batch_op:
        batch_op.drop_column("pin_by_terminal")
