"""Access tokens: what a token says, and every way a token is refused (fixed clock)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import jwt
import pytest

from hypemeter.auth.access_tokens import AccessTokens, looks_like_jwt
from hypemeter.auth.model import KeyLimits, Principal, Scope
from hypemeter.auth.service import AuthService
from hypemeter.auth.token_secret import access_tokens_of, load_token_secret
from hypemeter.clock import FixedClock
from hypemeter.errors import Unauthenticated
from hypemeter.settings import Settings

SECRET = b"s" * 40
NOW_S = 1_795_183_200
KEY = Principal(
    "acme",
    "key123",
    frozenset({Scope.READ, Scope.ADMIN}),
    KeyLimits(influencers=frozenset({"inf-1"}), max_value=10.0),
)


def codec(secret: bytes = SECRET, issuer: str = "hypemeter") -> AccessTokens:
    return AccessTokens(secret, issuer=issuer, lifetime_s=900)


def claims_of(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def test_a_token_carries_issuer_key_tenant_scopes_times_id_and_limits() -> None:
    issued = codec().issue(KEY, frozenset({Scope.READ}), NOW_S)
    claims = claims_of(issued.access_token)
    assert jwt.get_unverified_header(issued.access_token) == {"alg": "HS256", "typ": "at+jwt"}
    assert claims["iss"] == "hypemeter"
    assert claims["sub"] == "key123"
    assert claims["tid"] == "acme"
    assert claims["scope"] == "read"
    assert claims["iat"] == NOW_S
    assert claims["exp"] == NOW_S + 900
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert claims["lim"] == {"influencers": ["inf-1"], "max_value": 10.0}
    assert issued.expires_in == 900


def test_a_verified_token_speaks_for_its_key_with_its_own_scopes_and_limits() -> None:
    tokens = codec()
    issued = tokens.issue(KEY, frozenset({Scope.READ}), NOW_S)
    principal = tokens.verify(issued.access_token, NOW_S + 899)
    assert principal == Principal("acme", "key123", frozenset({Scope.READ}), KEY.limits)


def test_two_tokens_of_one_key_have_different_ids() -> None:
    tokens = codec()
    first = claims_of(tokens.issue(KEY, KEY.scopes, NOW_S).access_token)
    second = claims_of(tokens.issue(KEY, KEY.scopes, NOW_S).access_token)
    assert first["jti"] != second["jti"]


def test_an_expired_token_is_refused_by_the_injected_clock() -> None:
    tokens = codec()
    issued = tokens.issue(KEY, KEY.scopes, NOW_S)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(issued.access_token, NOW_S + 900 + 31)


def test_a_token_from_the_future_is_refused() -> None:
    tokens = codec()
    issued = tokens.issue(KEY, KEY.scopes, NOW_S + 3600)
    with pytest.raises(Unauthenticated, match="future"):
        tokens.verify(issued.access_token, NOW_S)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    issued = codec(b"o" * 40).issue(KEY, KEY.scopes, NOW_S)
    with pytest.raises(Unauthenticated, match="signature"):
        codec().verify(issued.access_token, NOW_S)


def test_a_token_of_another_issuer_is_refused() -> None:
    issued = codec(issuer="someone-else").issue(KEY, KEY.scopes, NOW_S)
    with pytest.raises(Unauthenticated, match="issuer"):
        codec().verify(issued.access_token, NOW_S)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_a_token_with_alg_none_is_refused() -> None:
    claims = claims_of(codec().issue(KEY, KEY.scopes, NOW_S).access_token)
    unsigned = f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(claims)}."
    with pytest.raises(Unauthenticated):
        codec().verify(unsigned, NOW_S)


def test_a_token_whose_claims_were_changed_is_refused() -> None:
    token = codec().issue(KEY, frozenset({Scope.READ}), NOW_S).access_token
    header, _, signature = token.split(".")
    claims = claims_of(token)
    claims["scope"] = "admin ingest read"
    tampered = f"{header}.{_b64(claims)}.{signature}"
    with pytest.raises(Unauthenticated, match="signature"):
        codec().verify(tampered, NOW_S)


def test_a_jwt_that_is_not_an_access_token_is_refused() -> None:
    claims = claims_of(codec().issue(KEY, KEY.scopes, NOW_S).access_token)
    other = jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "JWT"})
    with pytest.raises(Unauthenticated, match="typ"):
        codec().verify(other, NOW_S)


def test_a_token_signed_with_another_hmac_algorithm_is_refused() -> None:
    claims = claims_of(codec().issue(KEY, KEY.scopes, NOW_S).access_token)
    long_secret = b"l" * 64  # HS512 wants 512 bits
    other = jwt.encode(claims, long_secret, algorithm="HS512", headers={"typ": "at+jwt"})
    with pytest.raises(Unauthenticated, match="alg value is not allowed"):
        codec(long_secret).verify(other, NOW_S)


@pytest.mark.parametrize("missing", ["sub", "tid", "exp", "jti", "scope"])
def test_a_token_lacking_a_required_claim_is_refused(missing: str) -> None:
    claims = claims_of(codec().issue(KEY, KEY.scopes, NOW_S).access_token)
    del claims[missing]
    token = jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})
    with pytest.raises(Unauthenticated, match=missing):
        codec().verify(token, NOW_S)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AccessTokens(b"short", issuer="hypemeter", lifetime_s=900)


def test_keys_and_stream_tokens_do_not_look_like_jwts() -> None:
    assert looks_like_jwt(codec().issue(KEY, KEY.scopes, NOW_S).access_token)
    assert not looks_like_jwt("hm_0123456789ab_secret")
    assert not looks_like_jwt("hst_token")


class _Keys:
    """A tenant store holding only what AuthService.load reads."""

    def __init__(self, keys: list[object]) -> None:
        self.keys = keys

    async def list_tenants(self) -> list[object]:
        return []

    async def list_keys(self, tenant_id: str | None = None) -> list[object]:
        return self.keys


async def test_the_service_accepts_a_token_only_while_its_key_is_active() -> None:
    from hypemeter.auth.model import mint_key

    new = mint_key("acme", frozenset({Scope.READ}), name="k", created_at_us=0)
    store = _Keys([new.record])
    clock = FixedClock(NOW_S * 1_000_000)
    tokens = codec()
    auth = AuthService(store, clock, tokens=tokens)  # type: ignore[arg-type]
    await auth.load()
    owner = auth.authenticate(new.secret)
    token = tokens.issue(owner, owner.scopes, NOW_S).access_token
    assert auth.authenticate(token).key_id == new.record.key_id
    store.keys = []  # the key was revoked elsewhere; this process reloads
    await auth.load()
    with pytest.raises(Unauthenticated, match="revoked"):
        auth.authenticate(token)


async def test_without_a_secret_the_service_refuses_every_token() -> None:
    auth = AuthService(_Keys([]), FixedClock(NOW_S * 1_000_000))  # type: ignore[arg-type]
    token = codec().issue(KEY, KEY.scopes, NOW_S).access_token
    with pytest.raises(Unauthenticated, match="not accepted"):
        auth.authenticate(token)


def test_the_embedded_secret_is_a_private_file_made_once(tmp_path: Path) -> None:
    settings = Settings(data=tmp_path / "data")
    first = load_token_secret(settings)
    path = tmp_path / "data" / "jwt.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first is not None and len(first) >= 32
    assert load_token_secret(settings) == first  # a restart verifies earlier tokens


def test_a_configured_secret_wins_and_the_cluster_needs_one(tmp_path: Path) -> None:
    configured = Settings(data=tmp_path, jwt_secret="c" * 32, profile="cluster")
    assert load_token_secret(configured) == b"c" * 32
    # Each API process of a cluster has its own data directory: no file secret there.
    assert load_token_secret(Settings(data=tmp_path, profile="cluster")) is None
    assert access_tokens_of(Settings(data=tmp_path, profile="cluster")) is None
    assert not (tmp_path / "jwt.secret").exists()
