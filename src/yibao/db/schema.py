"""Database tables (SQLAlchemy Core), the same for SQLite and PostgreSQL.

Money is BIGINT fen. The journal (``journal_entries``, ``postings``) is
append-only: triggers installed by the migration refuse UPDATE and DELETE.
Personal account balances are stored (for the CHECK ≥ 0 and for locking);
pooled-fund and institution balances are sums of postings, so concurrent
settlements never queue on one hot row.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

__all__ = ["PERSONAL_KINDS", "metadata"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: Ledger account kinds whose balance belongs to an insured person and may never go below zero.
PERSONAL_KINDS = ("psn_current", "psn_historical")

regions = Table(
    "regions",
    metadata,
    Column("code", String(6), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("parent_code", String(6), ForeignKey("regions.code"), nullable=True),
)

institutions = Table(
    "institutions",
    metadata,
    Column("fixmedins_code", String(20), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("kind", String(10), nullable=False),  # hospital | pharmacy
    Column("hosp_lv", String(2), nullable=False),
    Column("admdvs", String(6), ForeignKey("regions.code"), nullable=False),
    Column("designated", Boolean, nullable=False),
    Column("valid_from", Date, nullable=False),
    Column("valid_to", Date, nullable=True),
    Column("networked", Boolean, nullable=False),
    # The institution's PIN pads verify the settlement PIN (密码由终端校验): 2206/2207 carry no pin.
    Column("pin_by_terminal", Boolean, nullable=False, server_default=false()),
    CheckConstraint("kind IN ('hospital', 'pharmacy')", name="kind"),
)

persons = Table(
    "persons",
    metadata,
    Column("psn_no", String(30), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("certno", String(18), nullable=False, unique=True),
    Column("gend", String(1), nullable=False),
    Column("brdy", Date, nullable=False),
    Column("admdvs", String(6), ForeignKey("regions.code"), nullable=False),
    Column("suspended_from", Date, nullable=True),
    Column("suspended_to", Date, nullable=True),
    Column("suspension_reason", String(200), nullable=True),
    Column("naty", String(3), nullable=True),  # 民族, GB/T 3304 (01 汉族 …); NULL = not recorded
    CheckConstraint("gend IN ('1', '2')", name="gend"),
)

enrolments = Table(
    "enrolments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("insutype", String(3), nullable=False),
    Column("psn_type", String(10), nullable=False),
    Column("admdvs", String(6), ForeignKey("regions.code"), nullable=False),
    Column("begn_date", Date, nullable=False),
    Column("pause_date", Date, nullable=True),
    Column("end_date", Date, nullable=True),
    Column("waiting_until", Date, nullable=True),  # 等待期: benefits start after this date
    Column("emp_name", String(200), nullable=True),  # 单位名称 (employee schemes); NULL = not recorded
)

identities = Table(
    "identities",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("idet_type", String(20), nullable=False),
    Column("begn_date", Date, nullable=False),
    Column("end_date", Date, nullable=True),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # card | evoucher | idcard
    Column("number", String(64), nullable=False),
    Column("card_sn", String(32), nullable=True),
    Column("status", String(12), nullable=False),  # active | temp_lost | lost | replaced
    Column("expires_at", DateTime, nullable=True),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("kind", "number", name="uq_credentials_kind_number"),
    CheckConstraint("kind IN ('card', 'evoucher', 'idcard')", name="kind"),
    CheckConstraint("status IN ('active', 'temp_lost', 'lost', 'replaced')", name="status"),
)

pins = Table(
    "pins",
    metadata,
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), primary_key=True),
    Column("pin_hash", String(200), nullable=False),
    Column("must_change", Boolean, nullable=False),
    Column("failed_attempts", Integer, nullable=False),
    Column("locked", Boolean, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String(80), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("owner", String(30), nullable=True, index=True),
    # Credit balance for liabilities and funds, debit balance for assets; stored only for
    # personal accounts (see module docstring), 0 elsewhere.
    Column("balance_fen", BigInteger, nullable=False, default=0),
    CheckConstraint(
        "kind NOT IN ('psn_current', 'psn_historical') OR balance_fen >= 0", name="personal_balance_not_negative"
    ),
)

journal_entries = Table(
    "journal_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(24), nullable=False),
    Column("ref", String(64), nullable=False, index=True),
    Column("created_at", DateTime, nullable=False),
    Column("memo", String(200), nullable=False, default=""),
)

postings = Table(
    "postings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", Integer, ForeignKey("journal_entries.id"), nullable=False, index=True),
    Column("account_id", Integer, ForeignKey("ledger_accounts.id"), nullable=False, index=True),
    Column("amount_fen", BigInteger, nullable=False),  # debit positive, credit negative
)

accumulators = Table(
    "accumulators",
    metadata,
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), primary_key=True),
    Column("year", Integer, primary_key=True),
    Column("insutype", String(3), primary_key=True),
    Column("key", String(80), primary_key=True),
    Column("value", BigInteger, nullable=False),
    CheckConstraint("value >= 0", name="not_negative"),
)

family_bindings = Table(
    "family_bindings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("holder_psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("member_psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("relation", String(20), nullable=False),  # the member's relation to the holder
    Column("bound_at", DateTime, nullable=False),
    Column("unbound_at", DateTime, nullable=True),
)

filings = Table(
    "filings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # offsite | disease
    Column("offsite_type", String(12), nullable=True),  # long_term | referral | emergency | temporary
    Column("mdtrtarea_admvs", String(6), nullable=True),
    Column("dise_codg", String(20), nullable=True),
    Column("begn_date", Date, nullable=False),
    Column("end_date", Date, nullable=True),
    Column("status", String(10), nullable=False),  # active | cancelled
    Column("created_at", DateTime, nullable=False),
)

settlements = Table(
    "settlements",
    metadata,
    Column("setl_id", String(32), primary_key=True),
    Column("msgid", String(40), nullable=True),
    Column("kind", String(10), nullable=False),  # settle | reversal
    Column("reverses_setl_id", String(32), ForeignKey("settlements.setl_id"), nullable=True, unique=True),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("fixmedins_code", String(20), ForeignKey("institutions.fixmedins_code"), nullable=False),
    Column("mdtrt_id", String(32), nullable=True, index=True),
    Column("insutype", String(3), nullable=False),
    Column("med_type", String(10), nullable=False),
    Column("year", Integer, nullable=False),
    Column("setl_time", DateTime, nullable=False),
    Column("medfee_sumamt", BigInteger, nullable=False),
    Column("fund_pay_sumamt", BigInteger, nullable=False),
    Column("acct_pay", BigInteger, nullable=False),
    Column("psn_cash_pay", BigInteger, nullable=False),
    Column("policy_version", String(80), nullable=False),
    Column("entry_id", Integer, ForeignKey("journal_entries.id"), nullable=False),
    Column("request_json", Text, nullable=False),
    Column("result_json", Text, nullable=False),
    Column("deltas_json", Text, nullable=False),
    Index("ix_settlements_inst_time", "fixmedins_code", "setl_time"),
)

messages = Table(
    "messages",
    metadata,
    # A msgid is the sender's: scoped by the calling institution (or /v1 caller), never global.
    Column("caller", String(48), primary_key=True),
    Column("msgid", String(40), primary_key=True),
    Column("operation", String(20), nullable=False),
    Column("payload_hash", String(64), nullable=False),
    Column("response_json", Text, nullable=False),
    Column("setl_id", String(32), nullable=True),
    Column("created_at", DateTime, nullable=False),
)

contributions = Table(
    "contributions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("kind", String(20), nullable=False),  # employee_monthly | retiree_allotment | resident_premium
    Column("period", String(7), nullable=False),  # YYYY-MM or YYYY
    Column("base_fen", BigInteger, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("account_fen", BigInteger, nullable=False),
    Column("entry_id", Integer, ForeignKey("journal_entries.id"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("psn_no", "kind", "period", name="uq_contributions_once_per_period"),
)

# -- the national-interface gateway -------------------------------------------------------

api_keys = Table(
    "api_keys",
    metadata,
    Column("access_key", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("fixmedins_code", String(20), ForeignKey("institutions.fixmedins_code"), nullable=False, index=True),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
    # How requests with this key are signed: api = _api_* HMAC-SHA1; tif = x-tif-* SHA-256 (gateway/signature.py).
    Column("scheme", String(8), nullable=False, server_default="api"),
    CheckConstraint("scheme IN ('api', 'tif')", name="scheme"),
)

gateway_signatures = Table(
    "gateway_signatures",
    metadata,
    # Each accepted request signature, kept until its replay window has passed: a signature is
    # accepted once, across every server process.
    Column("access_key", String(64), primary_key=True),
    Column("signature", String(128), primary_key=True),
    Column("expires_at", DateTime, nullable=False, index=True),
)

signins = Table(
    "signins",
    metadata,
    Column("sign_no", String(40), primary_key=True),
    Column("fixmedins_code", String(20), ForeignKey("institutions.fixmedins_code"), nullable=False, index=True),
    Column("opter", String(30), nullable=False),
    Column("opter_name", String(50), nullable=False),
    Column("signed_in_at", DateTime, nullable=False),
    Column("signed_out_at", DateTime, nullable=True),
)

visits = Table(
    "visits",
    metadata,
    Column("mdtrt_id", String(32), primary_key=True),
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("fixmedins_code", String(20), ForeignKey("institutions.fixmedins_code"), nullable=False, index=True),
    Column("insutype", String(3), nullable=False),
    Column("med_type", String(10), nullable=False),
    Column("begntime", String(19), nullable=False),
    Column("cert_type", String(2), nullable=False),
    Column("cert_no", String(64), nullable=False),
    Column("card_sn", String(32), nullable=True),
    Column("ipt_otp_no", String(30), nullable=False),
    Column("dise_codg", String(20), nullable=True),
    Column("status", String(10), nullable=False),  # open | cancelled | settled
    Column("created_at", DateTime, nullable=False),
    CheckConstraint("status IN ('open', 'cancelled', 'settled')", name="status"),
)

visit_fees = Table(
    "visit_fees",
    metadata,
    Column("mdtrt_id", String(32), ForeignKey("visits.mdtrt_id"), primary_key=True),
    Column("feedetl_sn", String(30), primary_key=True),
    Column("line_json", Text, nullable=False),
    Column("status", String(10), nullable=False),  # active | revoked
    Column("uploaded_at", DateTime, nullable=False),
)

# -- the resource API (/v1) ---------------------------------------------------------------

staff_users = Table(
    "staff_users",
    metadata,
    Column("username", String(40), primary_key=True),
    Column("password_hash", String(200), nullable=False),  # Argon2id
    Column("role", String(10), nullable=False),  # viewer | operator | admin
    Column("disabled", Boolean, nullable=False),
    Column("failed_attempts", Integer, nullable=False),  # consecutive wrong passwords
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),
)

api_sessions = Table(
    "api_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 of the bearer token; the token is never stored
    Column("kind", String(6), nullable=False),  # person | staff
    Column("subject", String(40), nullable=False, index=True),  # psn_no or username
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
    CheckConstraint("kind IN ('person', 'staff')", name="kind"),
)

api_idempotency = Table(
    "api_idempotency",
    metadata,
    Column("caller", String(48), primary_key=True),  # person:<psn_no> | staff:<username>
    Column("key", String(100), primary_key=True),  # the Idempotency-Key header
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response_json", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(48), nullable=False, index=True),  # person:<psn_no> | staff:<username> | cli
    Column("role", String(10), nullable=False),  # person | viewer | operator | admin | system
    Column("action", String(40), nullable=False),
    Column("target", String(80), nullable=False, index=True),
    Column("idempotency_key", String(100), nullable=True),
    Column("before_json", Text, nullable=True),
    Column("after_json", Text, nullable=True),
)

# -- access control (migration 0008) --------------------------------------------------------

portal_logins = Table(
    "portal_logins",
    metadata,
    # The /v1 portal's own throttle of wrong PINs per person, apart from the settlement PIN's
    # lock (``pins``) so that a stranger's guesses online never stop the person paying at a till.
    Column("psn_no", String(30), ForeignKey("persons.psn_no"), primary_key=True),
    Column("failed_attempts", Integer, nullable=False),  # consecutive wrong PINs at the portal
    Column("locked_until", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
)

binding_requests = Table(
    "binding_requests",
    metadata,
    # A family binding asked for by one party, in force only once the other party (or a minor's
    # guardian, or agency staff with consent evidence) confirms it: then ``binding_id`` is set.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("holder_psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("member_psn_no", String(30), ForeignKey("persons.psn_no"), nullable=False, index=True),
    Column("relation", String(20), nullable=False),  # the member's relation to the holder
    Column("status", String(10), nullable=False),  # pending | confirmed | declined | withdrawn | expired
    Column("requested_by", String(48), nullable=False),  # person:<psn_no> | staff:<username> | cli
    Column("requested_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("decided_at", DateTime, nullable=True),
    Column("decided_by", String(48), nullable=True),
    Column("consent_ref", String(64), nullable=True),  # the agency's evidence when staff consented for a party
    Column("binding_id", Integer, ForeignKey("family_bindings.id"), nullable=True),
    CheckConstraint(
        "status IN ('pending', 'confirmed', 'declined', 'withdrawn', 'expired')", name="status"
    ),
)

# -- clearing applications (migration 0011) -------------------------------------------------

clearing_applications = Table(
    "clearing_applications",
    metadata,
    # 3203 清算申请 of one institution for one period: the declared totals (fen), checked against the
    # institution's own settlements when the application was made. ``open_key`` is set while the
    # application stands (applied / processed) and NULL once revoked, so at most one standing
    # application exists per institution, clearing type, clearing agency and period.
    Column("clr_appy_evt_id", String(40), primary_key=True),
    Column("fixmedins_code", String(20), ForeignKey("institutions.fixmedins_code"), nullable=False),
    Column("msgid", String(40), nullable=False),
    Column("payload_hash", String(64), nullable=False),
    Column("clr_type", String(30), nullable=False),
    Column("clr_way", String(30), nullable=False),
    Column("clr_optins", String(6), nullable=False),  # "" = every insuring region
    Column("setlym", String(6), nullable=False),  # "" when not given
    Column("begndate", Date, nullable=False),
    Column("enddate", Date, nullable=False),
    Column("medfee_sumamt", BigInteger, nullable=False),
    Column("med_sumfee", BigInteger, nullable=False),
    Column("fund_appy_sum", BigInteger, nullable=False),
    Column("cash_payamt", BigInteger, nullable=False),
    Column("acct_pay", BigInteger, nullable=False),
    Column("psntime", Integer, nullable=False),
    Column("setl_cnt", Integer, nullable=False),  # settlement and reversal rows the totals cover
    Column("status", String(10), nullable=False),  # applied | processed | revoked
    Column("open_key", String(80), nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("processed_at", DateTime, nullable=True),
    Column("revoked_at", DateTime, nullable=True),
    Column("revoke_msgid", String(40), nullable=True),
    UniqueConstraint("fixmedins_code", "msgid", name="uq_clearing_applications_msgid"),
    UniqueConstraint("fixmedins_code", "open_key", name="uq_clearing_applications_open_key"),
    CheckConstraint("status IN ('applied', 'processed', 'revoked')", name="status"),
)
