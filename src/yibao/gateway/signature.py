"""Institution authentication as provincial gateways do it in public HIS client code: two schemes.

``api``: headers ``_api_name``, ``_api_version``, ``_api_timestamp`` (13-digit ms),
``_api_access_key`` and ``_api_signature`` = Base64(HMAC-SHA1(secret, the four
``_api_*`` fields sorted by key and joined as ``k=v&k=v``)).

``tif``: headers ``x-tif-paasid`` (the access key), ``x-tif-timestamp`` (seconds),
``x-tif-nonce`` and ``x-tif-signature`` = lower-case hex SHA-256 of
timestamp + token + nonce + timestamp, the token being the key's secret; the
signature is compared without regard to case.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["SIGNED_HEADERS", "TIF_HEADERS", "sign", "signing_string", "tif_sign", "tif_verify", "verify"]

SIGNED_HEADERS = ("_api_access_key", "_api_name", "_api_timestamp", "_api_version")
TIF_HEADERS = ("x-tif-paasid", "x-tif-timestamp", "x-tif-nonce", "x-tif-signature")


def signing_string(fields: Mapping[str, str]) -> str:
    return "&".join(f"{key}={fields[key]}" for key in sorted(SIGNED_HEADERS))


def sign(secret: str, fields: Mapping[str, str]) -> str:
    digest = hmac.new(secret.encode(), signing_string(fields).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(secret: str, fields: Mapping[str, str], signature: str) -> bool:
    return hmac.compare_digest(sign(secret, fields), signature)


def tif_sign(token: str, timestamp: str, nonce: str) -> str:
    return hashlib.sha256(f"{timestamp}{token}{nonce}{timestamp}".encode()).hexdigest()


def tif_verify(token: str, timestamp: str, nonce: str, signature: str) -> bool:
    return hmac.compare_digest(tif_sign(token, timestamp, nonce), signature.lower())
