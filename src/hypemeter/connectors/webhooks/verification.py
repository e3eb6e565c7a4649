"""Signature checks shared by the adapters: HMACs over raw bytes, compared in constant time.

Each check raises ``WebhookRefused`` with a reason naming the header at fault:
401 when something required is missing, 403 when it is present but wrong.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from hypemeter.connectors.webhooks.model import Secrets, WebhookRefused

US_PER_S = 1_000_000


def hmac_hex(secret: str, message: bytes, *, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, digest).hexdigest()


def hmac_b64(secret: str, message: bytes) -> str:
    raw = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(raw).decode()


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of two ASCII strings (non-ASCII never matches)."""
    try:
        return hmac.compare_digest(given.encode("ascii"), expected.encode("ascii"))
    except UnicodeEncodeError:
        return False


def require_secret(secrets: Secrets, name: str) -> str:
    """The configured secret ``name``; refuses (fail closed) when it is not configured."""
    secret = secrets.get(name)
    if not secret:
        raise WebhookRefused(403, f"the connector has no {name} configured")
    return secret


def require_header(headers: Mapping[str, str], name: str) -> str:
    """The value of header ``name`` (given in its canonical spelling); 401 when absent."""
    value = headers.get(name.lower())
    if not value:
        raise WebhookRefused(401, f"missing header {name}")
    return value


def check_signature(given: str, expected: str, *, header: str) -> None:
    if not same(given.strip(), expected):
        raise WebhookRefused(403, f"{header} does not match")


def check_fresh(
    sent_us: int, now_us: int, *, limit_s: int, header: str, shown: str, status: int
) -> None:
    """Refuse a signed timestamp further than ``limit_s`` from now (replay protection)."""
    age_s = abs(now_us - sent_us) // US_PER_S
    if age_s > limit_s:
        direction = "old" if now_us >= sent_us else "in the future"
        raise WebhookRefused(
            status, f"{header} is stale ({shown}, {age_s} s {direction}; limit {limit_s} s)"
        )
