"""Tenants, API keys and scopes. Pure data and rules; no I/O."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "hm_"
_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Scope(enum.StrEnum):
    """What a key may do. ``ingest`` is write-only and safe to ship inside apps."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


def parse_scopes(raw: str | list[str]) -> frozenset[Scope]:
    """Parse ``"ingest,read"`` or a list; raises ValueError naming an unknown scope."""
    parts = raw.split(",") if isinstance(raw, str) else raw
    names = [part.strip().lower() for part in parts if part.strip()]
    if not names:
        raise ValueError("at least one scope is required: ingest, read, admin")
    scopes: set[Scope] = set()
    for name in names:
        try:
            scopes.add(Scope(name))
        except ValueError:
            raise ValueError(f"unknown scope {name!r}; allowed: ingest, read, admin") from None
    return frozenset(scopes)


def check_tenant_name(name: str) -> str:
    """Tenant names are slugs; raises ValueError saying what is allowed."""
    if not _TENANT_NAME.match(name):
        raise ValueError(
            "tenant name must be 1-63 characters: lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    created_at_us: int


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What a key is narrowed to, beyond its scopes. An empty set means no limit.

    A read key limited to influencers or campaigns sees only their numbers (REST, live
    and CSV alike); an ingest key limited to platforms, metrics, influencers or
    campaigns may write only such events, with values up to ``max_value``.
    """

    platforms: frozenset[str] = frozenset()
    metrics: frozenset[str] = frozenset()
    influencers: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    max_value: float | None = None

    @property
    def unlimited(self) -> bool:
        return (
            not (self.platforms or self.metrics or self.influencers or self.campaigns)
            and self.max_value is None
        )


NO_LIMITS = KeyLimits()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key. The secret itself is never kept, only its SHA-256."""

    key_id: str
    tenant_id: str
    key_hash: str
    scopes: frozenset[Scope]
    name: str
    created_at_us: int
    revoked_at_us: int | None = None
    limits: KeyLimits = NO_LIMITS

    @property
    def active(self) -> bool:
        return self.revoked_at_us is None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly minted key: the only moment its secret exists in the clear."""

    record: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    # Keys carry 256 bits of entropy, so a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(secret.encode()).hexdigest()


def mint_key(tenant_id: str, scopes: frozenset[Scope], *, name: str, created_at_us: int) -> NewKey:
    key_id = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        key_id=key_id,
        tenant_id=tenant_id,
        key_hash=hash_key(secret),
        scopes=scopes,
        name=name,
        created_at_us=created_at_us,
    )
    return NewKey(record=record, secret=secret)


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant and scopes of the key that authenticated."""

    tenant_id: str
    key_id: str
    scopes: frozenset[Scope]
    limits: KeyLimits = NO_LIMITS

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes
