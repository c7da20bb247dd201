"""The national-interface gateway for hospitals and pharmacies (HIS)."""

from .app import GATEWAY_PATH, create_app
from .signature import sign

__all__ = ["GATEWAY_PATH", "create_app", "sign"]
