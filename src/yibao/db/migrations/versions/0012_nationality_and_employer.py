"""The person's 民族 (naty, GB/T 3304) and an enrolment's employer (emp_name): fields the national 1101, 2207
and 5201 answers carry. Existing rows have neither (answered empty).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 19:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("persons", schema=None) as batch_op:
        batch_op.add_column(sa.Column("naty", sa.String(3), nullable=True))
    with op.batch_alter_table("enrolments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("emp_name", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrolments", schema=None) as batch_op:
        batch_op.drop_column("emp_name")
    with op.batch_alter_table("persons", schema=None) as batch_op:
        batch_op.drop_column("naty")
