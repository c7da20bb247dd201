"""Policy as data: dated, per-region YAML resolved into typed parameters."""

from ._tree import Reference, Source
from .model import PolicyParams
from .store import Policy, PolicyStore

__all__ = ["Policy", "PolicyParams", "PolicyStore", "Reference", "Source"]
