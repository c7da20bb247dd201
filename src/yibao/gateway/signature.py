"""Institution authentication as provincial gateways do it in public HIS client code.

Headers ``_api_name``, ``_api_version``, ``_api_timestamp`` (13-digit ms),
``_api_access_key`` and ``_api_signature`` = Base64(HMAC-SHA1(secret, the four
``_api_*`` fields sorted by key and joined as ``k=v&k=v``)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["SIGNED_HEADERS", "sign", "signing_string", "verify"]

SIGNED_HEADERS = ("_api_access_key", "_api_name", "_api_timestamp", "_api_version")


def signing_string(fields: Mapping[str, str]) -> str:
    return "&".join(f"{key}={fields[key]}" for key in sorted(SIGNED_HEADERS))


def sign(secret: str, fields: Mapping[str, str]) -> str:
    digest = hmac.new(secret.encode(), signing_string(fields).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(secret: str, fields: Mapping[str, str], signature: str) -> bool:
    return hmac.compare_digest(sign(secret, fields), signature)
