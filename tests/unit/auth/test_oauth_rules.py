"""The client credentials grant's rules (RFC 6749 §2.3.1, §3.2, §3.3, §4.4, §5.2)."""

from __future__ import annotations

import base64

import pytest

from hypemeter.auth.access_tokens import AccessTokens
from hypemeter.auth.model import Principal, Scope
from hypemeter.auth.oauth import (
    TokenIssuer,
    TokenRequest,
    basic_credentials,
    granted_scopes,
    parse_form,
    token_request,
)
from hypemeter.errors import InvalidClient, TokenRequestRefused, Unauthenticated

FORM = "application/x-www-form-urlencoded"
HELD = frozenset({Scope.READ, Scope.INGEST})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def refused(code: str) -> pytest.RaisesExc[TokenRequestRefused]:
    return pytest.raises(TokenRequestRefused, check=lambda exc: exc.code == code)


def test_the_form_is_read_from_a_urlencoded_body() -> None:
    form = parse_form(b"grant_type=client_credentials&scope=read+ingest", FORM + "; charset=utf-8")
    assert form == {"grant_type": "client_credentials", "scope": "read ingest"}


def test_another_media_type_a_repeated_parameter_or_a_huge_body_is_an_invalid_request() -> None:
    with refused("invalid_request"):
        parse_form(b'{"grant_type": "client_credentials"}', "application/json")
    with refused("invalid_request"):
        parse_form(b"grant_type=client_credentials&scope=a&scope=b", FORM)
    with refused("invalid_request"):
        parse_form(b"scope=" + b"r" * 9000, FORM)


GRANT = b"grant_type=client_credentials"


def test_a_missing_grant_type_is_invalid_and_another_one_unsupported() -> None:
    with refused("invalid_request"):
        token_request(b"", FORM, basic("id", "secret"))
    with refused("unsupported_grant_type"):
        token_request(b"grant_type=password", FORM, basic("id", "secret"))


def test_credentials_come_from_basic_or_the_form_but_never_both() -> None:
    wanted = token_request(GRANT, FORM, basic("key1", "hm_x"))
    assert wanted == TokenRequest("key1", "hm_x", None)
    form = GRANT + b"&client_id=key1&client_secret=hm_x&scope=read"
    assert token_request(form, FORM, None) == TokenRequest("key1", "hm_x", "read")
    with refused("invalid_request"):
        token_request(form, FORM, basic("key1", "hm_x"))


def test_no_credentials_or_another_scheme_is_an_invalid_client() -> None:
    with pytest.raises(InvalidClient):
        token_request(GRANT, FORM, None)
    with pytest.raises(InvalidClient):
        token_request(GRANT, FORM, "Bearer hm_x")
    with pytest.raises(InvalidClient):
        basic_credentials("Basic not-base64!")


def test_the_client_is_authenticated_before_the_request_is_read() -> None:
    # Nothing to authenticate with: 401, even though the body is not a form either.
    with pytest.raises(InvalidClient):
        token_request(b"", "", None)
    with pytest.raises(InvalidClient):
        token_request(b'{"grant_type": "password"}', "application/json", None)
    with refused("invalid_request"):
        token_request(b'{"grant_type": "password"}', "application/json", basic("id", "hm_x"))
    # A client that names itself but sends the wrong grant learns only about the grant.
    with refused("unsupported_grant_type"):
        token_request(b"grant_type=password&client_id=a&client_secret=b", FORM, None)


def test_basic_credentials_are_form_decoded() -> None:
    assert basic_credentials(basic("a%3Ab", "c+d")) == ("a:b", "c d")


def test_scopes_are_the_keys_unless_narrowed_and_never_wider() -> None:
    assert granted_scopes(None, HELD) == HELD
    assert granted_scopes("  ", HELD) == HELD
    assert granted_scopes("read", HELD) == frozenset({Scope.READ})
    with refused("invalid_scope"):
        granted_scopes("read admin", HELD)
    with refused("invalid_scope"):
        granted_scopes("superuser", HELD)


KEY = Principal("acme", "key1", HELD)


def issuer(tokens: AccessTokens | None) -> TokenIssuer:
    def authenticate(secret: str) -> Principal:
        if secret != "hm_key1_secret":
            raise Unauthenticated("unknown")
        return KEY

    return TokenIssuer(authenticate, tokens, lambda: 1_795_183_200)


def test_the_client_is_the_key_whose_id_and_secret_match() -> None:
    tokens = AccessTokens(b"s" * 32, issuer="hypemeter", lifetime_s=900)
    assert issuer(tokens).client(TokenRequest("key1", "hm_key1_secret", None)) == KEY
    for wrong in (
        TokenRequest("key2", "hm_key1_secret", None),  # another key's id
        TokenRequest("key1", "hm_key1_other", None),  # unknown secret
        TokenRequest("key1", "eyJ.a.b", None),  # a token cannot mint a token
    ):
        with pytest.raises(InvalidClient):
            issuer(tokens).client(wrong)


def test_without_a_signing_secret_no_token_is_issued() -> None:
    with refused("unsupported_grant_type"):
        issuer(None).issue(KEY, TokenRequest("key1", "hm_key1_secret", None))
