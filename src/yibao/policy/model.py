"""The typed policy of one region on one date (immutable, validated).

These are the parameters the settlement engine reads. They are produced from the
merged YAML tree by :mod:`yibao.policy.store`; YAML keys ending in ``_yuan`` are
amounts in yuan and become ``*_fen`` integers here, ratios become basis points.
See ``docs/policy.md`` for the language.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ..money import apply_bp, parse_bp, parse_fen

__all__ = [
    "AccountFirst",
    "AccountRules",
    "Adjustment",
    "Band",
    "Benefit",
    "Cap",
    "Conditions",
    "Deductible",
    "Facts",
    "FamilyRules",
    "FundRule",
    "Funding",
    "Gates",
    "GatewayRules",
    "Layer",
    "PolicyParams",
    "Repeat",
    "Row",
    "Scheme",
    "Security",
    "Table",
]

OffsiteKind = Literal["local", "long_term", "referral", "emergency", "temporary", "unfiled"]
AccountSource = Literal["current_year", "historical"]
FundField = Literal["hifp_pay", "cvlserv_pay", "hifob_pay", "hifmi_pay", "hifes_pay", "maf_pay", "oth_pay"]

#: 一站式结算 order of the result fields: a layer may not precede an earlier field.
FIELD_ORDER: dict[str, int] = {
    "hifp_pay": 0,
    "cvlserv_pay": 1,
    "hifob_pay": 2,
    "hifmi_pay": 2,
    "hifes_pay": 3,
    "maf_pay": 4,
    "oth_pay": 5,
}


def _fen(value: Any) -> int:
    return parse_fen(value)


def _bp(value: Any) -> int:
    return parse_bp(value)


def _points(value: Any) -> int:
    return parse_bp(value, signed=True)


def _tuple_of_str(value: Any) -> Any:
    # A condition may name one value or a list of values; codes may be written as numbers.
    if isinstance(value, str | int) and not isinstance(value, bool):
        return (str(value),)
    if isinstance(value, list | tuple):
        return tuple(str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value)
    return value


Fen = Annotated[int, BeforeValidator(_fen)]
Bp = Annotated[int, BeforeValidator(_bp)]
Points = Annotated[int, BeforeValidator(_points)]
Codes = Annotated[tuple[str, ...], BeforeValidator(_tuple_of_str)]
Code6 = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)]


def _yuan_alias(name: str) -> str:
    return name[: -len("_fen")] + "_yuan" if name.endswith("_fen") else name


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=_yuan_alias,
        populate_by_name=False,
        arbitrary_types_allowed=False,
    )


class Facts:
    """What the conditions of a table can test, fixed for one settlement.

    ``ordinal`` (第几次住院) varies per layer and is passed separately.
    """

    __slots__ = (
        "age",
        "hosp_lv",
        "identities",
        "level",
        "med_type",
        "offsite",
        "person",
        "psn_type",
    )

    def __init__(
        self,
        *,
        person: str,
        psn_type: str,
        level: str,
        hosp_lv: str,
        age: int,
        identities: frozenset[str],
        offsite: str,
        med_type: str,
    ) -> None:
        self.person = person
        self.psn_type = psn_type
        self.level = level
        self.hosp_lv = hosp_lv
        self.age = age
        self.identities = identities
        self.offsite = offsite
        self.med_type = med_type


_CONDITION_KEYS = (
    "person",
    "psn_type",
    "level",
    "hosp_lv",
    "identity",
    "offsite",
    "med_type",
    "age_min",
    "age_max",
    "ordinal_min",
    "ordinal_max",
)


class Conditions(_Frozen):
    """All given conditions must hold (AND); a list inside one condition is an OR."""

    person: Codes | None = None
    psn_type: Codes | None = None
    level: Codes | None = None
    hosp_lv: Codes | None = None
    identity: Codes | None = None
    offsite: Codes | None = None
    med_type: Codes | None = None
    age_min: int | None = Field(default=None, ge=0, le=150)
    age_max: int | None = Field(default=None, ge=0, le=150)
    ordinal_min: int | None = Field(default=None, ge=1, le=366)
    ordinal_max: int | None = Field(default=None, ge=1, le=366)

    @model_validator(mode="after")
    def _ranges(self) -> Conditions:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_min is greater than age_max")
        if self.ordinal_min is not None and self.ordinal_max is not None and self.ordinal_min > self.ordinal_max:
            raise ValueError("ordinal_min is greater than ordinal_max")
        return self

    def is_empty(self) -> bool:
        return all(getattr(self, k) is None for k in _CONDITION_KEYS)

    def matches(self, facts: Facts, ordinal: int = 1) -> bool:
        if self.person is not None and facts.person not in self.person:
            return False
        if self.psn_type is not None and facts.psn_type not in self.psn_type:
            return False
        if self.level is not None and facts.level not in self.level:
            return False
        if self.hosp_lv is not None and facts.hosp_lv not in self.hosp_lv:
            return False
        if self.identity is not None and facts.identities.isdisjoint(self.identity):
            return False
        if self.offsite is not None and facts.offsite not in self.offsite:
            return False
        if self.med_type is not None and facts.med_type not in self.med_type:
            return False
        if self.age_min is not None and facts.age < self.age_min:
            return False
        if self.age_max is not None and facts.age > self.age_max:
            return False
        if self.ordinal_min is not None and ordinal < self.ordinal_min:
            return False
        return not (self.ordinal_max is not None and ordinal > self.ordinal_max)


V = TypeVar("V")


class Row(Conditions, Generic[V]):
    """One row of a table: conditions plus the value that applies when they hold."""

    value: V


class Table(BaseModel, Generic[V]):
    """An ordered list of rows; the first whose conditions hold gives the value.

    Written in YAML as a bare value (one unconditional row) or a list of rows
    ``{person: retired, level: level_3, value: 700}``; a bare value inside the list
    is an unconditional row. The last row must be unconditional, so every lookup
    has an answer, and only the last may be.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    rows: tuple[Row[V], ...]

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) == {"rows"}:
            return data
        items = data if isinstance(data, list) else [data]
        return {"rows": [item if isinstance(item, dict) else {"value": item} for item in items]}

    @model_validator(mode="after")
    def _total(self) -> Table[V]:
        if not self.rows:
            raise ValueError("a table needs at least one row")
        for i, row in enumerate(self.rows[:-1]):
            if row.is_empty():
                raise ValueError(f"row {i} has no conditions, so the rows after it can never apply")
        if not self.rows[-1].is_empty():
            raise ValueError("the last row must have no conditions (the default value)")
        return self

    def lookup(self, facts: Facts, ordinal: int = 1) -> tuple[V, int]:
        """The value of the first matching row and that row's index."""
        rows = self.rows
        last = len(rows) - 1
        for i in range(last):
            if rows[i].matches(facts, ordinal):
                return rows[i].value, i
        # Validation guarantees the last row is unconditional: no need to test it.
        return rows[last].value, last


class Repeat(_Frozen):
    """How the per-visit deductible changes from the second visit of the year.

    * ``list``: ``amounts_yuan`` for the 2nd, 3rd … visit; the last repeats.
    * ``step``: each later visit is ``step_yuan`` lower, never below ``floor_yuan``.
    * ``percent``: later visits pay ``ratio`` of the first visit's amount.
    """

    kind: Literal["list", "step", "percent"]
    amounts_fen: tuple[Fen, ...] | None = None
    step_fen: Fen | None = None
    floor_fen: Fen | None = None
    ratio: Bp | None = None

    @model_validator(mode="after")
    def _shape(self) -> Repeat:
        needed = {"list": ("amounts_fen",), "step": ("step_fen", "floor_fen"), "percent": ("ratio",)}
        for name in needed[self.kind]:
            if getattr(self, name) is None:
                raise ValueError(f"kind {self.kind!r} needs {_yuan_alias(name)}")
        if self.kind == "list" and not self.amounts_fen:
            raise ValueError("amounts_yuan must not be empty")
        return self

    def amount(self, first_fen: int, ordinal: int) -> int:
        assert ordinal >= 2
        if self.kind == "list":
            assert self.amounts_fen
            return self.amounts_fen[min(ordinal - 2, len(self.amounts_fen) - 1)]
        if self.kind == "step":
            assert self.step_fen is not None and self.floor_fen is not None
            return max(self.floor_fen, first_fen - self.step_fen * (ordinal - 1))
        assert self.ratio is not None
        return apply_bp(first_fen, self.ratio)


class Deductible(_Frozen):
    """起付线.

    ``period: visit`` — owed afresh each admission/visit (``repeat`` may lower later ones);
    ``period: year`` — owed once per calendar year; with ``top_up`` the amount is the
    highest one among the levels used so far this year and only the difference is owed
    when moving up (累计补差). ``factor`` scales the amount (e.g. 0.5 for 低保).
    """

    period: Literal["visit", "year"]
    top_up: bool = False
    amount_fen: Table[Fen]
    repeat: Repeat | None = None
    factor: Table[Bp] = Field(default_factory=lambda: Table[Bp].model_validate(1))

    @model_validator(mode="after")
    def _shape(self) -> Deductible:
        if self.top_up and self.period != "year":
            raise ValueError("top_up (累计补差) needs period: year")
        if self.repeat is not None and self.period != "visit":
            raise ValueError("repeat needs period: visit")
        return self


class Band(_Frozen):
    """A segment (分段) starting at ``from_yuan`` of the measured cumulative amount."""

    from_fen: Fen
    ratio: Table[Bp]


class Adjustment(_Frozen):
    """Points added to the ratio when the conditions hold (e.g. +0.05 at 70+)."""

    when: Conditions
    points: Points
    title: str = ""


class Cap(_Frozen):
    """An annual limit shared by every rule naming the same ``name``; null = no cap."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    title: str = ""
    amount_fen: Table[Fen | None]


class FundRule(_Frozen):
    """How one fund computes its payment: deductible, bands of ratios, caps.

    ``base`` is what the fund pays on: ``inscope`` — the benefit's in-scope amount
    (the basic pooled fund); ``over_cap`` — the in-scope amount left above the basic
    fund's cap (大额); ``remaining`` — the policy-range amount the person still bears
    after the funds before this one (大病, 医疗救助, 公务员补助).
    ``measure`` says where band thresholds are counted from: ``cumulative`` — the
    annual base from zero (the deductible sits inside the first band);
    ``above_deductible`` — the annual amount above the deductible.
    """

    title: str
    fund_pay_type: str = Field(pattern=r"^\d{6}$")
    field: FundField = "hifp_pay"
    base: Literal["inscope", "over_cap", "remaining"] = "inscope"
    when: Conditions | None = None
    deductible: Deductible | None = None
    measure: Literal["cumulative", "above_deductible"] = "above_deductible"
    ratio: Table[Bp] | None = None
    bands: tuple[Band, ...] = ()
    adjustments: tuple[Adjustment, ...] = ()
    caps: tuple[Cap, ...] = ()

    @model_validator(mode="after")
    def _bands(self) -> FundRule:
        if self.ratio is not None and self.bands:
            raise ValueError("give either 'ratio' or 'bands', not both")
        if self.ratio is None and not self.bands:
            raise ValueError("missing required value: 'ratio' or 'bands'")
        if self.bands:
            if self.bands[0].from_fen != 0:
                raise ValueError("bands[0].from_yuan must be 0")
            for i in range(1, len(self.bands)):
                if self.bands[i].from_fen <= self.bands[i - 1].from_fen:
                    raise ValueError(f"bands[{i}].from_yuan must be greater than bands[{i - 1}].from_yuan")
        names = [c.name for c in self.caps]
        if len(names) != len(set(names)):
            raise ValueError("caps name the same cap twice")
        return self

    @cached_property
    def band_list(self) -> tuple[Band, ...]:
        """The bands, with a lone ``ratio`` as one band from zero."""
        if self.bands:
            return self.bands
        assert self.ratio is not None
        return (Band.model_validate({"from_yuan": 0, "ratio": self.ratio}),)


class AccountFirst(_Frozen):
    """Account-first stage (上海 当年账户): these balances pay in-scope costs before any fund."""

    sources: tuple[AccountSource, ...] = Field(min_length=1)


class Benefit(_Frozen):
    """One kind of care (住院, 门诊统筹, 门诊慢特病 …) selected by ``med_type``."""

    title: str
    med_types: Codes = Field(min_length=1)
    clr_type: str = Field(default="11", pattern=r"^\d{2}$")
    requires_disease_filing: bool = False
    account_first: AccountFirst | None = None
    fund: FundRule


class Layer(FundRule):
    """A fund after the basic pool, in 一站式 order, for the listed benefits."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")
    benefits: Codes = Field(min_length=1)
    base: Literal["inscope", "over_cap", "remaining"] = "remaining"


class FamilyRules(_Frozen):
    """家庭共济: may bound relatives' accounts pay this person's share."""

    enabled: bool = False
    relations: tuple[str, ...] = ()
    same_region: bool = False
    max_members: int | None = Field(default=None, ge=1, le=20)


class AccountRules(_Frozen):
    """个人账户: which balances pay, in what order, and what they may pay for."""

    enabled: bool = True
    sources: tuple[AccountSource, ...] = ("current_year", "historical")
    pays_fulamt_ownpay: bool = True
    pays_overlmt: bool = True
    family: FamilyRules = FamilyRules()


class Gates(_Frozen):
    """What happens when an eligibility gate fails: refuse, or settle with no fund."""

    offsite_unfiled: Literal["allow", "no_fund", "refuse"] = "refuse"
    disease_filing_missing: Literal["no_fund", "refuse"] = "refuse"


class Scheme(_Frozen):
    """One insurance scheme (险种, by ``insutype``) in one region."""

    title: str
    account: AccountRules = AccountRules()
    gates: Gates = Gates()
    benefits: Mapping[str, Benefit]
    layers: tuple[Layer, ...] = ()

    @field_validator("benefits")
    @classmethod
    def _names(cls, value: Mapping[str, Benefit]) -> Mapping[str, Benefit]:
        for name in value:
            if not name.isidentifier() or not name.islower():
                raise ValueError(f"benefit name {name!r} must be a lower-case identifier")
        return value


class Security(_Frozen):
    """Credential rules (domain.md §8)."""

    max_pin_attempts: int = Field(default=6, ge=1, le=20)
    initial_pin: str = Field(default="123456", pattern=r"^\d{6}$")
    evoucher_ttl_minutes: int = Field(default=5, ge=1, le=1440)


class GatewayRules(_Frozen):
    """How the national-interface gateway treats the region's institutions (provincial specs differ)."""

    #: Every transaction but 9001 carries the sign_no of a 9001 sign-in (some provincial specs make it optional).
    sign_no_required: bool = True
    #: An authentication failure is answered as the national envelope (HTTP 200, infcode -1), or as the
    #: provincial gateway does it: HTTP 401 with {"code": 401, "message": …}.
    auth_failure: Literal["envelope", "http401"] = "envelope"


class Funding(_Frozen):
    """How accounts and funds are fed (domain.md §5) and the waiting periods (§7)."""

    #: In-service employees: share of the contribution base credited to the personal account (≈2%).
    employee_account_ratio: Bp = 200
    #: Employee total contribution rate on the base (employer + employee), the rest goes to the pool.
    employee_contribution_ratio: Bp = 800
    #: Retirees: fixed monthly allotment from the pool into the personal account.
    retiree_monthly_allotment_fen: Fen = 8300
    #: Residents: annual premium.
    resident_premium_fen: Fen = 38000
    employee_fund_pay_type: str = Field(default="310100", pattern=r"^\d{6}$")
    resident_fund_pay_type: str = Field(default="390100", pattern=r"^\d{6}$")
    #: Residents enrolling late or after a lapse wait this many months, plus one per lapsed year.
    resident_waiting_months: int = Field(default=3, ge=0, le=24)
    resident_extra_months_per_lapsed_year: int = Field(default=1, ge=0, le=12)
    #: Newborns enrolled within this many days of birth are covered from birth.
    newborn_grace_days: int = Field(default=90, ge=0, le=366)
    #: Employees whose contributions lapsed this many months resume after as many months paid.
    employee_lapse_months: int = Field(default=3, ge=1, le=24)


class PolicyParams(_Frozen):
    """Everything a region's policy says on one date."""

    security: Security = Security()
    gateway: GatewayRules = GatewayRules()
    funding: Funding = Funding()
    person_categories: Mapping[str, str]
    level_groups: Mapping[str, str]
    identities: Mapping[str, str] = {}
    relations: Mapping[str, str] = {}
    schemes: Mapping[str, Scheme]

    @field_validator("person_categories", "level_groups", "schemes", mode="before")
    @classmethod
    def _code_keys(cls, value: Any) -> Any:
        # Codes such as psn_type 1101 or insutype 310 may be written unquoted in YAML.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value
