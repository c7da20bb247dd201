"""Policy as data: dated, per-region YAML resolved into typed parameters."""

from ._tree import Reference, Source
from .model import GatewayRules, PolicyParams
from .store import Policy, PolicyStore

__all__ = ["GatewayRules", "Policy", "PolicyParams", "PolicyStore", "Reference", "Source"]
