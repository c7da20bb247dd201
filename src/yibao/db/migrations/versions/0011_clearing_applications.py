"""Clearing applications (3203 清算申请 / 3204 清算申请撤销) of the institutions.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clearing_applications",
        sa.Column("clr_appy_evt_id", sa.String(length=40), nullable=False),
        sa.Column("fixmedins_code", sa.String(length=20), nullable=False),
        sa.Column("msgid", sa.String(length=40), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("clr_type", sa.String(length=30), nullable=False),
        sa.Column("clr_way", sa.String(length=30), nullable=False),
        sa.Column("clr_optins", sa.String(length=6), nullable=False),
        sa.Column("setlym", sa.String(length=6), nullable=False),
        sa.Column("begndate", sa.Date(), nullable=False),
        sa.Column("enddate", sa.Date(), nullable=False),
        sa.Column("medfee_sumamt", sa.BigInteger(), nullable=False),
        sa.Column("med_sumfee", sa.BigInteger(), nullable=False),
        sa.Column("fund_appy_sum", sa.BigInteger(), nullable=False),
        sa.Column("cash_payamt", sa.BigInteger(), nullable=False),
        sa.Column("acct_pay", sa.BigInteger(), nullable=False),
        sa.Column("psntime", sa.Integer(), nullable=False),
        sa.Column("setl_cnt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("open_key", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoke_msgid", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "status IN ('applied', 'processed', 'revoked')", name=op.f("ck_clearing_applications_status")
        ),
        sa.ForeignKeyConstraint(
            ["fixmedins_code"],
            ["institutions.fixmedins_code"],
            name=op.f("fk_clearing_applications_fixmedins_code_institutions"),
        ),
        sa.PrimaryKeyConstraint("clr_appy_evt_id", name=op.f("pk_clearing_applications")),
        sa.UniqueConstraint("fixmedins_code", "msgid", name="uq_clearing_applications_msgid"),
        sa.UniqueConstraint("fixmedins_code", "open_key", name="uq_clearing_applications_open_key"),
    )


def downgrade() -> None:
    op.drop_table("clearing_applications")
