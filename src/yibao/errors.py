"""The one exception tree of yibao; every error carries a stable ``code``.

Entry points map ``code`` to their own vocabulary (CLI exit status, the
national ``infcode``, HTTP problem types); nothing else is raised on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CatalogError",
    "PolicyError",
    "RequestError",
    "SettlementRefused",
    "YibaoError",
]


class YibaoError(Exception):
    """Base of every error yibao raises deliberately."""

    code = "YIBAO_ERROR"


class PolicyError(YibaoError):
    """A policy file is invalid: names the file, the key path and the reason."""

    code = "POLICY_INVALID"

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file, self.key, self.reason = file, key, reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class CatalogError(YibaoError):
    """A catalogue file is invalid: names the file, the line and the column."""

    code = "CATALOG_INVALID"

    def __init__(self, file: str, line: int, column: str, reason: str) -> None:
        self.file, self.line, self.column, self.reason = file, line, column, reason
        super().__init__(f"{file}:{line}: {column}: {reason}")


class RequestError(YibaoError):
    """A settlement request is malformed: names the field and why."""

    code = "REQUEST_INVALID"

    def __init__(self, field: str, reason: str, *, code: str | None = None) -> None:
        self.field, self.reason = field, reason
        if code is not None:
            self.code = code
        super().__init__(f"{field}: {reason}" if field else reason)


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason a gate refused: a stable code and plain Chinese text."""

    code: str
    message: str


class SettlementRefused(YibaoError):
    """An eligibility gate refuses the settlement outright (not merely no fund)."""

    code = "NOT_ENTITLED"

    def __init__(self, reasons: tuple[Reason, ...]) -> None:
        assert reasons, "a refusal needs at least one reason"
        self.reasons = reasons
        super().__init__("; ".join(r.message for r in reasons))
