"""OAuth 2.0 client credentials (RFC 6749 §4.4): an API key trades itself for a
short-lived access token, possibly with fewer scopes.

The client is the key: ``client_id`` is its id and ``client_secret`` the key
itself, sent with HTTP Basic (§2.3.1) or as form fields, never both.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote_plus

from hypemeter.auth.access_tokens import AccessTokens, IssuedToken
from hypemeter.auth.model import KEY_PREFIX, Principal, Scope
from hypemeter.errors import InvalidClient, TokenRequestRefused, Unauthenticated

GRANT = "client_credentials"
MAX_FORM_BYTES = 8 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class TokenRequest:
    client_id: str
    client_secret: str
    scope: str | None


def _refused(code: str, message: str) -> TokenRequestRefused:
    return TokenRequestRefused(code, message)


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """The form parameters; each at most once (§3.2)."""
    if content_type.split(";", maxsplit=1)[0].strip().lower() != FORM_TYPE:
        raise _refused("invalid_request", f"the body must be {FORM_TYPE}")
    if len(body) > MAX_FORM_BYTES:
        raise _refused("invalid_request", f"the body is larger than {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise _refused("invalid_request", "the body is not a valid form") from None
    repeated = sorted(name for name, values in fields.items() if len(values) > 1)
    if repeated:
        raise _refused("invalid_request", f"parameter {repeated[0]!r} is repeated")
    return {name: values[0] for name, values in fields.items()}


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(client_id, client_secret) from ``Authorization: Basic``; None without one."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("authenticate the client with HTTP Basic or form fields")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("the Basic credentials are not valid base64") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise InvalidClient("the Basic credentials lack the ':' between id and secret")
    # §2.3.1: both are form-encoded before they are joined.
    return unquote_plus(client_id), unquote_plus(secret)


def token_request(body: bytes, content_type: str, authorization: str | None) -> TokenRequest:
    """Find the client's credentials (§2.3.1), then read the grant (§4.4.2).

    A request that carries no credentials at all is answered ``invalid_client`` (401)
    whatever else is wrong with it: the endpoint authenticates first.
    """
    basic = basic_credentials(authorization)
    try:
        form = parse_form(body, content_type)
    except TokenRequestRefused:
        if basic is None:
            raise InvalidClient("client_id and client_secret are required") from None
        raise
    in_form = "client_id" in form or "client_secret" in form
    if basic is not None and in_form:
        raise _refused("invalid_request", "send the client credentials one way, not two")
    if basic is None:
        basic = (form.get("client_id", ""), form.get("client_secret", ""))
    client_id, secret = basic
    if not client_id or not secret:
        raise InvalidClient("client_id and client_secret are required")
    grant = form.get("grant_type")
    if not grant:
        raise _refused("invalid_request", "grant_type is required")
    if grant != GRANT:
        raise _refused("unsupported_grant_type", f"only grant_type={GRANT} is supported")
    return TokenRequest(client_id, secret, form.get("scope"))


def granted_scopes(requested: str | None, held: frozenset[Scope]) -> frozenset[Scope]:
    """The scopes a token gets: those asked for (space-separated), which the key must
    hold; all of the key's when none are asked for (§3.3)."""
    if requested is None or not requested.strip():
        return held
    wanted: set[Scope] = set()
    for name in requested.split():
        try:
            wanted.add(Scope(name))
        except ValueError:
            raise _refused(
                "invalid_scope", f"unknown scope {name!r}; allowed: ingest, read, admin"
            ) from None
    wider = sorted(s.value for s in wanted - held)
    if wider:
        raise _refused("invalid_scope", f"the key does not hold the scope {wider[0]!r}")
    return frozenset(wanted)


class TokenIssuer:
    """Issues access tokens for keys that authenticate as OAuth clients."""

    def __init__(
        self,
        authenticate: Callable[[str], Principal],
        tokens: AccessTokens | None,
        now_s: Callable[[], int],
    ) -> None:
        self._authenticate = authenticate
        self._tokens = tokens
        self._now_s = now_s

    def client(self, request: TokenRequest) -> Principal:
        """The key behind the client credentials; raises InvalidClient."""
        if not request.client_secret.startswith(KEY_PREFIX):
            raise InvalidClient()  # an access token cannot mint another
        try:
            principal = self._authenticate(request.client_secret)
        except Unauthenticated:
            raise InvalidClient() from None
        if principal.key_id != request.client_id:
            raise InvalidClient()
        return principal

    def issue(self, principal: Principal, request: TokenRequest) -> IssuedToken:
        if self._tokens is None:
            raise _refused(
                "unsupported_grant_type",
                "access tokens are off on this deployment: set HYPEMETER_JWT_SECRET, the "
                "same on every API process",
            )
        scopes = granted_scopes(request.scope, principal.scopes)
        return self._tokens.issue(principal, scopes, self._now_s())
