"""Request and response bodies of the resource API.

Money is shown as yuan with two decimals in a string (``"800.00"``, ``"-455.00"``),
as in the national interface. Request bodies refuse unknown fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

__all__ = [
    "AccountOut",
    "AccountsOut",
    "AuditOut",
    "AuditPage",
    "BindingCreate",
    "BindingOut",
    "BindingRequestCreate",
    "BindingRequestOut",
    "BindingRequestsOut",
    "BindingsOut",
    "CardOut",
    "ConsentIn",
    "DesignationUpdate",
    "DiseaseFilingCreate",
    "EnrolmentOut",
    "FilingOut",
    "IdentityOut",
    "InstitutionOut",
    "InstitutionPage",
    "LedgerEntryOut",
    "LedgerPage",
    "OffsiteFilingCreate",
    "PasswordChange",
    "PersonLogin",
    "PersonOut",
    "PersonSummary",
    "PinChange",
    "PolicyOut",
    "ReversalCreate",
    "ReversalOut",
    "RoleChange",
    "SessionOut",
    "SettlementDetail",
    "SettlementOut",
    "SettlementPage",
    "StaffCreate",
    "StaffLogin",
    "StaffOut",
    "WhoAmI",
]

MIN_DATE = dt.date(1900, 1, 1)
MAX_DATE = dt.date(2199, 12, 31)


def _sane_date(value: dt.date) -> dt.date:
    if not MIN_DATE <= value <= MAX_DATE:
        raise ValueError(f"must be between {MIN_DATE} and {MAX_DATE}")
    return value


def _plain_text(value: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain control characters")
    value.encode("utf-8")  # lone surrogates raise UnicodeEncodeError, a ValueError
    return value


Day = Annotated[dt.date, AfterValidator(_sane_date)]
#: Times are the platform's local time (Beijing time, as in the national interface), without an offset.
LocalTime = Annotated[
    dt.datetime,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$",
            "description": "Local time (Beijing time), ISO 8601 without offset",
            "examples": ["2025-03-01T09:30:00"],
        }
    ),
]
Yuan = Annotated[str, Field(description="Amount in yuan, two decimals", examples=["800.00"])]
PsnNo = Annotated[str, Field(pattern=r"^[0-9A-Za-z]{1,30}$", examples=["P1"])]
Region = Annotated[str, Field(pattern=r"^\d{6}$", examples=["210600"])]
Note = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_plain_text)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- sessions ------------------------------------------------------------------------------
class PersonLogin(_Input):
    """An insured person: ID number or card number (exactly one) and the settlement PIN."""

    kind: Literal["person"]
    id_number: Annotated[str, Field(pattern=r"^\d{17}[\dXx]$", examples=["210602195805010013"])] | None = None
    card_number: Annotated[str, Field(pattern=r"^[0-9A-Za-z]{1,64}$", examples=["D12345678"])] | None = None
    pin: Annotated[str, Field(pattern=r"^\d{6}$", description="The 6-digit settlement PIN")]

    @model_validator(mode="after")
    def _one_identifier(self) -> PersonLogin:
        if (self.id_number is None) == (self.card_number is None):
            raise ValueError("give exactly one of id_number and card_number")
        return self


class StaffLogin(_Input):
    """An agency staff user."""

    kind: Literal["staff"]
    username: Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_plain_text)]
    password: Annotated[str, Field(min_length=1, max_length=256)]


class SessionOut(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`")
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: LocalTime
    kind: Literal["person", "staff"]
    subject: str = Field(description="psn_no of a person, username of staff")
    role: str = Field(description="person, viewer, operator or admin")
    pin_must_change: bool = Field(False, description="The initial PIN must be changed before the account pays")


class WhoAmI(BaseModel):
    kind: Literal["person", "staff"]
    subject: str
    role: str
    expires_at: LocalTime


# -- persons -------------------------------------------------------------------------------
class CardOut(BaseModel):
    card_no: str
    status: str = Field(description="active, temp_lost, lost or replaced")


class EnrolmentOut(BaseModel):
    id: int
    insutype: str
    psn_type: str
    admdvs: str
    begn_date: dt.date
    pause_date: dt.date | None
    end_date: dt.date | None
    waiting_until: dt.date | None


class IdentityOut(BaseModel):
    id: int
    idet_type: str
    begn_date: dt.date
    end_date: dt.date | None


class PersonSummary(BaseModel):
    psn_no: str
    name: str
    certno: str
    gend: str
    brdy: dt.date
    admdvs: str


class PersonOut(PersonSummary):
    suspended_from: dt.date | None
    suspended_to: dt.date | None
    suspension_reason: str | None
    pin_set: bool
    pin_must_change: bool
    pin_locked: bool
    cards: list[CardOut]
    enrolments: list[EnrolmentOut]
    identities: list[IdentityOut]


class PinChange(_Input):
    old_pin: Annotated[str, Field(pattern=r"^\d{6}$")]
    new_pin: Annotated[str, Field(pattern=r"^\d{6}$")]


# -- accounts and ledger -------------------------------------------------------------------
class AccountOut(BaseModel):
    kind: Literal["current_year", "historical"] = Field(description="当年账户 or 历年账户")
    ledger_account: str
    balance: Yuan


class AccountsOut(BaseModel):
    psn_no: str
    accounts: list[AccountOut]
    total: Yuan


class PostingOut(BaseModel):
    account: Literal["current_year", "historical"]
    amount: Yuan = Field(description="Signed: positive credits the person's account, negative draws on it")


class LedgerEntryOut(BaseModel):
    entry_id: int
    kind: str
    ref: str
    created_at: LocalTime
    memo: str
    postings: list[PostingOut]


class LedgerPage(BaseModel):
    psn_no: str
    entries: list[LedgerEntryOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page; null at the end")


# -- settlements ---------------------------------------------------------------------------
class SettlementOut(BaseModel):
    setl_id: str
    kind: Literal["settle", "reversal"]
    reverses_setl_id: str | None
    reversed_by: str | None = Field(description="setl_id of the reversal of this settlement, if any")
    psn_no: str
    fixmedins_code: str
    mdtrt_id: str | None
    insutype: str
    med_type: str
    year: int
    setl_time: LocalTime
    medfee_sumamt: Yuan
    fund_pay_sumamt: Yuan
    acct_pay: Yuan
    psn_cash_pay: Yuan
    policy_version: str


class SettlementPage(BaseModel):
    items: list[SettlementOut]
    limit: int
    offset: int


class SettlementDetail(SettlementOut):
    setlinfo: dict[str, Any] = Field(description="The stored national setlinfo")
    setldetail: list[dict[str, Any]] = Field(description="Fund payments (national setldetail)")
    detlcutinfo: list[dict[str, Any]] = Field(description="Per-line split (national detlcutinfo)")
    acct_mulaid: list[dict[str, Any]] = Field(description="Relatives' accounts that paid (家庭共济)")
    explanation: list[str] = Field(description="The settlement explained step by step")


class ReversalCreate(_Input):
    reason: Note


class ReversalOut(BaseModel):
    reversal: SettlementOut
    reverses_setl_id: str
    setlinfo: dict[str, Any] = Field(description="The reversal's national setlinfo (amounts negated)")


# -- family bindings -----------------------------------------------------------------------
class BindingOut(BaseModel):
    id: int
    holder_psn_no: str = Field(description="Whose personal account pays")
    member_psn_no: str = Field(description="Whom it pays for")
    relation: str = Field(description="The member's relation to the holder")
    bound_at: LocalTime
    unbound_at: LocalTime | None


class BindingsOut(BaseModel):
    psn_no: str
    as_holder: list[BindingOut]
    as_member: list[BindingOut]


Relation = Annotated[
    str, Field(pattern=r"^[a-z][a-z_]{0,19}$", description="The member's relation to the holder", examples=["spouse"])
]
ConsentRef = Annotated[
    str,
    Field(
        min_length=1, max_length=64, pattern=r"^\S(.*\S)?$", examples=["DD-2025-0001"],
        description="The consent evidence the agency has seen: signed form, household register entry …",
    ),
    AfterValidator(_plain_text),
]  # fmt: skip


class BindingCreate(_Input):
    """A binding made by agency staff at once, on the consent evidence they record."""

    holder_psn_no: PsnNo
    member_psn_no: PsnNo
    relation: Relation
    consent_ref: ConsentRef


class BindingRequestCreate(_Input):
    """An insured person asks for a binding they are a party to; the other party confirms."""

    holder_psn_no: PsnNo
    member_psn_no: PsnNo
    relation: Relation


class ConsentIn(_Input):
    """Staff confirming on a party's behalf record the evidence; persons send no body."""

    consent_ref: ConsentRef | None = None


class BindingRequestOut(BaseModel):
    id: int
    holder_psn_no: str = Field(description="Whose personal account would pay")
    member_psn_no: str = Field(description="Whom it would pay for")
    relation: str = Field(description="The member's relation to the holder")
    status: Literal["pending", "confirmed", "declined", "withdrawn", "expired"]
    awaiting_psn_no: str | None = Field(
        description="The party whose consent it needs (the one who did not ask); null if the agency made it"
    )
    requested_by: str = Field(description="person:<psn_no>, or staff:<username> for a binding the agency made")
    requested_at: LocalTime
    expires_at: LocalTime
    decided_at: LocalTime | None
    decided_by: str | None = Field(description="person:<psn_no> (the party or a guardian) or staff:<username>")
    consent_ref: str | None = Field(description="The agency's consent evidence, when staff consented")
    binding_id: int | None = Field(description="The binding made on confirmation")


class BindingRequestsOut(BaseModel):
    psn_no: str
    incoming: list[BindingRequestOut] = Field(description="Awaiting this person's consent")
    outgoing: list[BindingRequestOut] = Field(description="Asked for by this person")
    as_guardian: list[BindingRequestOut] = Field(
        description="Awaiting the consent of a minor this person is guardian of (on record as their parent)"
    )


# -- filings -------------------------------------------------------------------------------
class FilingOut(BaseModel):
    id: int
    psn_no: str
    kind: Literal["offsite", "disease"]
    offsite_type: str | None
    mdtrtarea_admvs: str | None
    dise_codg: str | None
    begn_date: dt.date
    end_date: dt.date | None
    status: Literal["active", "cancelled"]


class OffsiteFilingCreate(_Input):
    """异地就医备案."""

    kind: Literal["offsite"]
    offsite_type: Literal["long_term", "referral", "emergency", "temporary"]
    mdtrtarea_admvs: Region
    begn_date: Day
    end_date: Day | None = None


class DiseaseFilingCreate(_Input):
    """门诊慢特病备案."""

    kind: Literal["disease"]
    dise_codg: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,19}$", examples=["E11.900"])]
    begn_date: Day
    end_date: Day | None = None


# -- institutions --------------------------------------------------------------------------
class InstitutionOut(BaseModel):
    fixmedins_code: str
    name: str
    kind: Literal["hospital", "pharmacy"]
    hosp_lv: str
    admdvs: str
    designated: bool
    valid_from: dt.date
    valid_to: dt.date | None
    networked: bool


class InstitutionPage(BaseModel):
    items: list[InstitutionOut]
    limit: int
    offset: int


class DesignationUpdate(_Input):
    designated: bool
    valid_from: Day
    valid_to: Day | None = None


class GatewayKeyIssue(_Input):
    scheme: Literal["api", "tif"] = Field(
        default="api", description="api: _api_* headers signed with HMAC-SHA1; tif: x-tif-* headers (SHA-256)"
    )


class GatewayKeyOut(BaseModel):
    access_key: str = Field(description="_api_access_key or x-tif-paasid")
    fixmedins_code: str
    scheme: Literal["api", "tif"]
    created_at: LocalTime
    revoked_at: LocalTime | None
    secret: str | None = Field(default=None, description="Only in the answer that issues the key: keep it safe")


# -- policies ------------------------------------------------------------------------------
class ReferenceOut(BaseModel):
    key: str
    title: str
    url: str | None
    status: str = Field(description="published or assumption")
    note: str | None


class ParameterOut(BaseModel):
    key: str
    value: Any = Field(description="A number (fen, basis points, counts), text, a flag, or null")
    file: str
    effective_from: dt.date | None
    reference: ReferenceOut | None


class PolicyOut(BaseModel):
    region: str
    name: str
    chain: list[str]
    version: str
    date: dt.date
    effective_from: dt.date
    effective_to: dt.date | None
    parameters: list[ParameterOut]


# -- staff and audit -----------------------------------------------------------------------
Role = Literal["viewer", "operator", "admin"]


class StaffOut(BaseModel):
    username: str
    role: Role
    disabled: bool
    locked: bool = Field(description="Too many wrong passwords; enable to unlock")
    created_at: LocalTime
    updated_at: LocalTime


class StaffCreate(_Input):
    username: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{2,39}$", examples=["operator1"])]
    password: Annotated[str, Field(min_length=12, max_length=256)]
    role: Role


class RoleChange(_Input):
    role: Role


class PasswordChange(_Input):
    new_password: Annotated[str, Field(min_length=12, max_length=256)]
    old_password: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="Required when changing one's own password"
    )


class AuditOut(BaseModel):
    id: int
    at: LocalTime
    actor: str
    role: str
    action: str
    target: str
    idempotency_key: str | None
    before: Any
    after: Any


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_before: int | None
