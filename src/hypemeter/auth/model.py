"""Tenants, API keys and scopes. Pure data and rules; no I/O."""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypemeter.events.model import (
    BUILTIN_METRICS,
    MAX_ID_LENGTH,
    MAX_VALUE_LIMIT,
    METRIC_ALIASES,
    PLATFORMS,
    canonical_name,
    check_custom_metric_name,
    normalize_platform,
)

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

    @property
    def narrows_reads(self) -> bool:
        """Whether reads are narrowed: to influencers, campaigns or both (then to events
        of those influencers in those campaigns)."""
        return bool(self.influencers or self.campaigns)

    @property
    def narrows_writes_only(self) -> bool:
        """Whether any limit that binds only writing is set."""
        return bool(self.platforms or self.metrics) or self.max_value is not None

    def payload(self) -> dict[str, Any] | None:
        """The limits as JSON (sorted lists), or None when there are none."""
        if self.unlimited:
            return None
        out: dict[str, Any] = {
            name: sorted(values)
            for name, values in (
                ("platforms", self.platforms),
                ("metrics", self.metrics),
                ("influencers", self.influencers),
                ("campaigns", self.campaigns),
            )
            if values
        }
        if self.max_value is not None:
            out["max_value"] = self.max_value
        return out


NO_LIMITS = KeyLimits()

# At most this many ids a key may be limited to, per kind (influencers, campaigns).
MAX_LIMIT_IDS = 1000
_ID_LIMITS = ("influencers", "campaigns")
LIMIT_FIELDS = ("platforms", "metrics", *_ID_LIMITS, "max_value")


class LimitsInvalid(ValueError):
    """A key's limits that cannot be accepted; ``field`` names the member at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


def parse_limits(raw: object, scopes: frozenset[Scope]) -> KeyLimits:
    """A key's limits from JSON (``None`` or ``{}``: no limits), checked against the key's
    scopes. Raises LimitsInvalid naming the member at fault.

    Platforms are normalised (``ig`` -> ``instagram``), metric aliases resolved; a
    metric need not be registered yet, but must be a valid metric name.
    """
    if raw is None:
        return NO_LIMITS
    if not isinstance(raw, Mapping):
        raise LimitsInvalid("limits", "limits must be an object")
    unknown = sorted(str(name) for name in raw if name not in LIMIT_FIELDS)
    if unknown:
        raise LimitsInvalid(
            f"limits.{unknown[0]}",
            f"unknown limit {unknown[0]!r}; allowed: {', '.join(LIMIT_FIELDS)}",
        )
    limits = KeyLimits(
        platforms=_names(raw, "platforms", _platform),
        metrics=_names(raw, "metrics", _metric),
        influencers=_names(raw, "influencers", _id),
        campaigns=_names(raw, "campaigns", _id),
        max_value=_max_value(raw.get("max_value")),
    )
    _check_scopes(limits, scopes)
    return limits


def _names(raw: Mapping[str, Any], name: str, check: Any) -> frozenset[str]:
    values = raw.get(name)
    if values is None:
        return frozenset()
    field_name = f"limits.{name}"
    if not isinstance(values, list) or not values:
        raise LimitsInvalid(
            field_name, f"{field_name} must be a non-empty list (leave it out for no limit)"
        )
    if len(values) > MAX_LIMIT_IDS:
        raise LimitsInvalid(field_name, f"{field_name} may hold at most {MAX_LIMIT_IDS} items")
    out: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            raise LimitsInvalid(field_name, f"{field_name} must hold strings, not {value!r}")
        out.add(check(field_name, value))
    return frozenset(out)


def _platform(field_name: str, value: str) -> str:
    platform = normalize_platform(value)
    if platform is None:
        raise LimitsInvalid(
            field_name, f"unknown platform {value!r}; allowed: {', '.join(PLATFORMS)}"
        )
    return platform


def _metric(field_name: str, value: str) -> str:
    name = canonical_name(value)
    name = METRIC_ALIASES.get(name, name)
    if name in BUILTIN_METRICS:
        return name
    try:
        return check_custom_metric_name(name)
    except ValueError as exc:
        raise LimitsInvalid(field_name, f"metric {value!r}: {exc}") from None


def _id(field_name: str, value: str) -> str:
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise LimitsInvalid(field_name, f"ids in {field_name} are 1-{MAX_ID_LENGTH} characters")
    return value


def _max_value(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LimitsInvalid("limits.max_value", "limits.max_value must be a number")
    if not (math.isfinite(value) and 0 < value <= MAX_VALUE_LIMIT):
        raise LimitsInvalid(
            "limits.max_value", f"limits.max_value must be above 0 and at most {MAX_VALUE_LIMIT:g}"
        )
    return float(value)


def _check_scopes(limits: KeyLimits, scopes: frozenset[Scope]) -> None:
    if limits.unlimited:
        return
    if Scope.ADMIN in scopes:
        # An admin key can mint itself an unlimited key, so its limits would bind nothing.
        raise LimitsInvalid("limits", "an admin key cannot be limited; drop the admin scope")
    if Scope.READ in scopes and limits.narrows_writes_only:
        # Reads are narrowed by influencer and campaign only; a limit a read key would
        # not honour is refused rather than silently ignored.
        raise LimitsInvalid(
            "limits",
            "platforms, metrics and max_value limit what a key writes; a key with the read "
            "scope may be limited to influencers and campaigns only",
        )


def limits_to_json(limits: KeyLimits) -> str | None:
    """How a store keeps a key's limits; None for a key without any."""
    payload = limits.payload()
    return None if payload is None else json.dumps(payload, sort_keys=True)


def limits_from_json(text: str | None) -> KeyLimits:
    """The limits a store kept (``limits_to_json``)."""
    if not text:
        return NO_LIMITS
    raw = json.loads(text)
    max_value = raw.get("max_value")
    return KeyLimits(
        platforms=frozenset(raw.get("platforms", ())),
        metrics=frozenset(raw.get("metrics", ())),
        influencers=frozenset(raw.get("influencers", ())),
        campaigns=frozenset(raw.get("campaigns", ())),
        max_value=None if max_value is None else float(max_value),
    )


@dataclass(frozen=True, slots=True)
class ReadNarrowing:
    """Where a read route names the one influencer and the one campaign it reads: the
    name of a path or query parameter, or None when it reads across them.

    A key limited to influencers (campaigns) may use a route only where the route names
    one influencer (campaign) and that one is within the key's limits.
    ``checked_by_route`` marks a route that enforces the limits itself (live filters).
    """

    influencer: str | None = None
    campaign: str | None = None
    checked_by_route: bool = False


TENANT_WIDE = ReadNarrowing()
CHECKED_BY_ROUTE = ReadNarrowing(checked_by_route=True)


def read_refusal(
    limits: KeyLimits,
    narrowing: ReadNarrowing,
    params: Mapping[str, list[str]],
    route: str,
) -> tuple[str, str] | None:
    """Why a key with ``limits`` may not make this read, as (limit, message); None when
    it may. ``params`` holds the values of the request's path and query parameters
    that ``narrowing`` names."""
    if not limits.narrows_reads or narrowing.checked_by_route:
        return None
    for kind, allowed, param in (
        ("influencers", limits.influencers, narrowing.influencer),
        ("campaigns", limits.campaigns, narrowing.campaign),
    ):
        if not allowed:
            continue
        limit = f"limits.{kind}"
        if param is None:
            return limit, (
                f"this key may read only some {kind} ({limit}); {route} reads across "
                "them, so it is not open to this key"
            )
        values = params.get(param, [])
        if len(values) != 1:
            return limit, f"this key may read only some {kind} ({limit}): pass one {param}"
        if values[0] not in allowed:
            return limit, f"{param} {values[0]!r} is outside this key's {limit}"
    return None


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


def mint_key(
    tenant_id: str,
    scopes: frozenset[Scope],
    *,
    name: str,
    created_at_us: int,
    limits: KeyLimits = NO_LIMITS,
) -> NewKey:
    key_id = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        key_id=key_id,
        tenant_id=tenant_id,
        key_hash=hash_key(secret),
        scopes=scopes,
        name=name,
        created_at_us=created_at_us,
        limits=limits,
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


@dataclass(frozen=True, slots=True)
class RateState:
    """Where a key stands in its current window, for the RateLimit headers."""

    limit: int
    remaining: int
    reset_after: int

    def headers(self) -> dict[str, str]:
        values = {
            "Limit": str(self.limit),
            "Remaining": str(self.remaining),
            "Reset": str(self.reset_after),
        }
        out = {f"RateLimit-{k}": v for k, v in values.items()}
        out.update({f"X-RateLimit-{k}": v for k, v in values.items()})
        return out
