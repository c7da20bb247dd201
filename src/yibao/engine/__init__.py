"""The pure settlement engine: no database, no HTTP, no clock, no randomness."""

from .request import FeeLine, SettlementRequest, parse_request
from .result import SettlementResult, check_identities
from .settle import Engine, scheme_counters, settle
from .trace import TraceStep, render

__all__ = [
    "Engine",
    "FeeLine",
    "SettlementRequest",
    "SettlementResult",
    "TraceStep",
    "check_identities",
    "parse_request",
    "render",
    "scheme_counters",
    "settle",
]
