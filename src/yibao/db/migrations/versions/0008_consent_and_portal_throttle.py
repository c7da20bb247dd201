"""Family binding requests (consent before a binding) and the portal's own login throttle.

``binding_requests``: a family binding asked for by one party takes effect only when the
other party, a minor's guardian, or agency staff recording consent evidence confirms it.

``portal_logins``: wrong PINs at the /v1 portal are counted here, no longer in ``pins``
(the settlement PIN's lock, which hospital tills check), and lock the portal only, for a
time that doubles with each further failure.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_logins",
        sa.Column("psn_no", sa.String(length=30), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["psn_no"], ["persons.psn_no"], name=op.f("fk_portal_logins_psn_no_persons")),
        sa.PrimaryKeyConstraint("psn_no", name=op.f("pk_portal_logins")),
    )
    op.create_table(
        "binding_requests",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("holder_psn_no", sa.String(length=30), nullable=False),
        sa.Column("member_psn_no", sa.String(length=30), nullable=False),
        sa.Column("relation", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("requested_by", sa.String(length=48), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=48), nullable=True),
        sa.Column("consent_ref", sa.String(length=64), nullable=True),
        sa.Column("binding_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'declined', 'withdrawn', 'expired')",
            name=op.f("ck_binding_requests_status"),
        ),
        sa.ForeignKeyConstraint(
            ["binding_id"], ["family_bindings.id"], name=op.f("fk_binding_requests_binding_id_family_bindings")
        ),
        sa.ForeignKeyConstraint(
            ["holder_psn_no"], ["persons.psn_no"], name=op.f("fk_binding_requests_holder_psn_no_persons")
        ),
        sa.ForeignKeyConstraint(
            ["member_psn_no"], ["persons.psn_no"], name=op.f("fk_binding_requests_member_psn_no_persons")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_binding_requests")),
    )
    with op.batch_alter_table("binding_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_binding_requests_holder_psn_no"), ["holder_psn_no"], unique=False)
        batch_op.create_index(batch_op.f("ix_binding_requests_member_psn_no"), ["member_psn_no"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("binding_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_binding_requests_member_psn_no"))
        batch_op.drop_index(batch_op.f("ix_binding_requests_holder_psn_no"))
    op.drop_table("binding_requests")
    op.drop_table("portal_logins")
