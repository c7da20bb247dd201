"""yibao: payer-side settlement for China's basic medical insurance (基本医疗保险).

The public API: load policies and a catalogue once, then settle requests.

    >>> from yibao import Engine, PolicyStore, load_demo_catalog, parse_request
    >>> engine = Engine(PolicyStore.load_dir("policies/"), load_demo_catalog())
    >>> result = engine.settle(parse_request(request_json))
"""

from .catalog import Catalog, CatalogItem, load_demo_catalog
from .engine import Engine, SettlementRequest, SettlementResult, check_identities, parse_request, settle
from .errors import CatalogError, PolicyError, RequestError, SettlementRefused, YibaoError
from .policy import Policy, PolicyStore

__all__ = [
    "Catalog",
    "CatalogError",
    "CatalogItem",
    "Engine",
    "Policy",
    "PolicyError",
    "PolicyStore",
    "RequestError",
    "SettlementRefused",
    "SettlementRequest",
    "SettlementResult",
    "YibaoError",
    "check_identities",
    "load_demo_catalog",
    "parse_request",
    "settle",
]

__version__ = "0.1.0"
