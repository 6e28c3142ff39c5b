"""Who may push: each carrier's webhook authentication as pure, constant-time checks.

- FedEx: `fdx-signature` is base64(HMAC-SHA256(security token, raw body)): computed over the
  bytes as received, before any parsing.
- UPS Track Alert: the credential we gave at subscription comes back in a header
  (`Authorization: Bearer <credential>` by default, or an API-key header).
- DHL Unified Push: a static header of our choosing, no signature.
Every comparison is `hmac.compare_digest`, so a wrong guess takes as long as a near miss.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

FEDEX_SIGNATURE_HEADER = "fdx-signature"


def fedex_signature(body: bytes, secret: str) -> str:
    """What FedEx puts in `fdx-signature` for this raw body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def fedex_verified(body: bytes, signature: str | None, secret: str) -> bool:
    if not signature or not secret:
        return False
    expected = fedex_signature(body, secret).encode()
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))


def header_value(header: str, credential: str) -> str:
    """The header's expected text: `Bearer <credential>` in `Authorization`, else as is."""
    return f"Bearer {credential}" if header.lower() == "authorization" else credential


def header_verified(headers: Mapping[str, str], header: str, credential: str) -> bool:
    """`headers[header]` is our credential (header names are case-insensitive)."""
    given = headers.get(header.lower())
    if given is None or not credential:
        return False
    expected = header_value(header, credential).encode()
    return hmac.compare_digest(expected, given.strip().encode("utf-8", "replace"))
