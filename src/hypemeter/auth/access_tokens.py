"""Short-lived access tokens: JWTs (RFC 7519) signed with HS256, issued for an API key.

A token names its issuing key (``sub``), the key's tenant (``tid``), the scopes
it grants (``scope``, at most the key's) and the key's limits (``lim``). It is
accepted wherever a key is, while it is unexpired and its key is still active.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any

import jwt

from hypemeter.auth.model import KeyLimits, Principal, Scope
from hypemeter.errors import Unauthenticated

ALGORITHM = "HS256"
TOKEN_TYPE = "at+jwt"  # noqa: S105  (RFC 9068: tells an access token from any other JWT)
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key of at least 256 bits
REQUIRED_CLAIMS = ("iss", "sub", "tid", "scope", "iat", "exp", "jti")
# Clock skew tolerated between the API processes of a deployment.
LEEWAY_S = 30


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scopes: frozenset[Scope]


def looks_like_jwt(secret: str) -> bool:
    """Keys start ``hm_`` and stream tokens ``hst_``; a JWT is three base64url parts."""
    return secret.startswith("eyJ") and secret.count(".") == 2


def limits_claim(limits: KeyLimits) -> dict[str, Any]:
    claim: dict[str, Any] = {}
    for spec in dataclasses.fields(limits):
        value = getattr(limits, spec.name)
        if isinstance(value, frozenset):
            if value:
                claim[spec.name] = sorted(value)
        elif value is not None:
            claim[spec.name] = value
    return claim


def limits_of(claim: object) -> KeyLimits:
    if not isinstance(claim, dict):
        raise _invalid("its lim claim is not an object")
    known = {spec.name for spec in dataclasses.fields(KeyLimits)}
    values: dict[str, Any] = {}
    for name, value in claim.items():
        if name not in known:
            raise _invalid(f"its lim claim has an unknown member {name!r}")
        values[name] = frozenset(str(v) for v in value) if isinstance(value, list) else value
    try:
        return KeyLimits(**values)
    except TypeError as exc:
        raise _invalid(f"its lim claim is not valid: {exc}") from None


def _invalid(reason: str) -> Unauthenticated:
    return Unauthenticated(f"invalid access token: {reason}", field="Authorization")


class AccessTokens:
    """Issues and verifies access tokens with one server secret.

    Time is passed in (seconds since the epoch), so expiry is checked against the
    injected clock, not the library's.
    """

    def __init__(self, secret: bytes, *, issuer: str, lifetime_s: int) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the token signing secret needs at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.issuer = issuer
        self.lifetime_s = lifetime_s

    def issue(self, principal: Principal, scopes: frozenset[Scope], now_s: int) -> IssuedToken:
        """A token for ``principal``'s key, granting ``scopes`` (a subset of its own)."""
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": principal.key_id,
            "client_id": principal.key_id,
            "tid": principal.tenant_id,
            "scope": " ".join(sorted(s.value for s in scopes)),
            "iat": now_s,
            "exp": now_s + self.lifetime_s,
            "jti": secrets.token_urlsafe(16),
        }
        if not principal.limits.unlimited:
            claims["lim"] = limits_claim(principal.limits)
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})
        return IssuedToken(token, self.lifetime_s, scopes)

    def verify(self, token: str, now_s: int) -> Principal:
        """The principal a token speaks for; raises Unauthenticated when the token is
        malformed, signed otherwise or with another algorithm, expired or not ours.

        Whether its key is still active is the caller's check.
        """
        claims = self._decode(token)
        if not isinstance(claims["exp"], int) or claims["exp"] <= now_s - LEEWAY_S:
            raise _invalid("it has expired")
        if not isinstance(claims["iat"], int) or claims["iat"] > now_s + LEEWAY_S:
            raise _invalid("it was issued in the future")
        try:
            scopes = frozenset(Scope(s) for s in str(claims["scope"]).split())
        except ValueError:
            raise _invalid("its scope names an unknown scope") from None
        if not scopes:
            raise _invalid("it grants no scope")
        limits = limits_of(claims.get("lim", {}))
        return Principal(str(claims["tid"]), str(claims["sub"]), scopes, limits)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != TOKEN_TYPE:
                raise _invalid(f"its typ is not {TOKEN_TYPE}")
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],  # pinned: never "none", never what the header says
                issuer=self.issuer,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_exp": False,  # checked against the injected clock
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise _invalid(str(exc).rstrip(".").lower() or type(exc).__name__) from None
        return claims
