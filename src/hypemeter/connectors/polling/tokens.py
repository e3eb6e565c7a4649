"""Refreshing the platforms' expiring access tokens before they expire (pure).

A polling credential that carries ``expires_at`` (RFC 3339) is refreshed once it
expires within its platform's margin; the answer's token and expiry replace the
credential's. Facts relied on:

- Instagram (developers.facebook.com, Instagram Platform reference "Refresh Access
  Token"): long-lived Instagram User tokens live 60 days and can be refreshed once
  they are at least 24 hours old and unexpired, with
  ``GET https://graph.instagram.com/refresh_access_token?grant_type=ig_refresh_token
  &access_token=<token>`` -> ``{"access_token", "token_type", "expires_in"}`` (seconds).
  The reference documents the token in the query string only, so that is how it is
  sent (the logs redact it). Refreshed 7 days before expiry: a 60-day token is then
  53 days old, well past the 24 hours.
- TikTok (developers.tiktok.com, "Refresh a User Access Token"):
  ``POST /v2/oauth/token/`` on open.tiktokapis.com, form-encoded ``client_key``,
  ``client_secret``, ``grant_type=refresh_token``, ``refresh_token`` ->
  ``{"access_token", "expires_in", "refresh_token", "refresh_expires_in", "open_id",
  "scope", "token_type"}``; errors are ``{"error", "error_description", "log_id"}``.
  Access tokens live hours (24 h, 2 h in later docs), refresh tokens months, and
  refresh tokens rotate: the answer's replaces the one sent. Refreshed 15 minutes
  before expiry. The client secret is the connector's ``client_secret`` (the one
  its webhooks are signed with); the client key is the credential's ``client_key``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import msgspec

from hypemeter.connectors.polling.model import Call, PollError, require_secret

EXPIRES_AT = "expires_at"
REFRESH_EXPIRES_AT = "refresh_expires_at"
US_PER_S = 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The expiry times and token lifetimes taken from a tenant or a platform: far beyond
# any real token, and far within what a datetime can hold, so every time computed or
# shown from them can be written.
EARLIEST_US = 0  # 1970-01-01T00:00:00Z
LATEST_US = (dt.datetime(2200, 1, 1, tzinfo=dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
MAX_LIFETIME_S = 10 * 366 * 86_400  # ten years


class TokenRefresher(Protocol):
    """How one platform refreshes a credential's access token."""

    @property
    def platform(self) -> str: ...
    @property
    def margin_s(self) -> float: ...  # refresh when the token expires within this

    def call(self, credential: Mapping[str, str], secrets: Mapping[str, str], now_us: int) -> Call:
        """The refresh request; raises PollError when something it needs is missing or
        expired."""

    def read(self, status: int, body: bytes, now_us: int) -> dict[str, str]:
        """The credential's new fields; raises PollError (``upstream`` the platform's
        message) when the refresh was refused."""


def parse_time_us(raw: str) -> int | None:
    """An RFC 3339 time with an offset, in microseconds since the epoch; None otherwise."""
    try:
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def in_time_window(us: int) -> bool:
    """Whether a time lies between EARLIEST_US and LATEST_US (1970 and 2200, UTC)."""
    return EARLIEST_US <= us <= LATEST_US


def format_time(us: int) -> str:
    """RFC 3339 in UTC; raises OverflowError beyond the years 1..9999."""
    moment = _EPOCH + dt.timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expires_us(credential: Mapping[str, str], name: str = EXPIRES_AT) -> int | None:
    raw = credential.get(name)
    return None if raw is None else parse_time_us(raw)


def refresh_due(credential: Mapping[str, str], margin_s: float, now_us: int) -> bool:
    """Whether the credential's token expires within ``margin_s`` (never without an expiry)."""
    expiry = expires_us(credential)
    return expiry is not None and expiry - now_us <= margin_s * US_PER_S


def _seconds(raw: object, what: str, platform: str) -> int:
    # NaN fails the comparison too; a lifetime past MAX_LIFETIME_S is no real token's.
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= MAX_LIFETIME_S:
        raise PollError(f"{platform} token refresh: the answer has no valid {what}")
    return int(raw)


class _MetaError(msgspec.Struct):
    message: str = ""
    type: str = ""
    code: int | str | None = None


class _InstagramAnswer(msgspec.Struct):
    access_token: str | None = None
    expires_in: Any = None
    error: _MetaError | None = None


@dataclass(frozen=True, slots=True)
class InstagramRefresher:
    platform: str = "instagram"
    margin_s: float = 7 * 86_400.0
    path: str = "/refresh_access_token"

    def call(self, credential: Mapping[str, str], secrets: Mapping[str, str], now_us: int) -> Call:
        token = require_secret(credential, "access_token", self.platform)
        params = (("grant_type", "ig_refresh_token"), ("access_token", token))
        return Call("GET", self.path, params=params)

    def read(self, status: int, body: bytes, now_us: int) -> dict[str, str]:
        answer = _decode(body, _InstagramAnswer, self.platform, status)
        if answer.error is not None or status >= 400 or not answer.access_token:
            error = answer.error or _MetaError()
            raise PollError(
                f"instagram token refresh refused: HTTP {status}, error {error.code}",
                upstream=error.message or None,
            )
        lifetime = _seconds(answer.expires_in, "expires_in", self.platform)
        return {
            "access_token": answer.access_token,
            EXPIRES_AT: format_time(now_us + lifetime * US_PER_S),
        }


class _TikTokAnswer(msgspec.Struct):
    access_token: str | None = None
    expires_in: Any = None
    refresh_token: str | None = None
    refresh_expires_in: Any = None
    error: str | None = None
    error_description: str = ""
    log_id: str = ""


@dataclass(frozen=True, slots=True)
class TikTokRefresher:
    platform: str = "tiktok"
    margin_s: float = 15 * 60.0
    path: str = "/v2/oauth/token/"

    def call(self, credential: Mapping[str, str], secrets: Mapping[str, str], now_us: int) -> Call:
        refresh_token = require_secret(credential, "refresh_token", self.platform)
        client_key = credential.get("client_key") or secrets.get("client_key")
        client_secret = secrets.get("client_secret")
        if not client_key or not client_secret:
            raise PollError(
                "tiktok token refresh needs the credential's client_key and the "
                "connector's client_secret"
            )
        expiry = expires_us(credential, REFRESH_EXPIRES_AT)
        if expiry is not None and expiry <= now_us:
            raise PollError(
                f"tiktok refresh token expired at {credential[REFRESH_EXPIRES_AT]}: "
                "the user must authorize the app again"
            )
        form = {
            "client_key": client_key,
            "client_secret": client_secret,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        }
        return Call("POST", self.path, form=form)

    def read(self, status: int, body: bytes, now_us: int) -> dict[str, str]:
        answer = _decode(body, _TikTokAnswer, self.platform, status)
        if answer.error or status >= 400 or not answer.access_token:
            raise PollError(
                f"tiktok token refresh refused: HTTP {status}, error {answer.error or '?'} "
                f"(log_id {answer.log_id})",
                upstream=answer.error_description or None,
            )
        fields = {
            "access_token": answer.access_token,
            EXPIRES_AT: format_time(
                now_us + _seconds(answer.expires_in, "expires_in", self.platform) * US_PER_S
            ),
        }
        if answer.refresh_token:  # rotated: the one sent no longer works
            fields["refresh_token"] = answer.refresh_token
        if answer.refresh_expires_in is not None:
            lifetime = _seconds(answer.refresh_expires_in, "refresh_expires_in", self.platform)
            fields[REFRESH_EXPIRES_AT] = format_time(now_us + lifetime * US_PER_S)
        return fields


def _decode(body: bytes, shape: type[Any], platform: str, status: int) -> Any:
    try:
        return msgspec.json.decode(body, type=shape)
    except msgspec.DecodeError:
        raise PollError(
            f"{platform} token refresh: HTTP {status}, the answer is not in the documented format",
            upstream=body[:200].decode(errors="replace"),
        ) from None


REFRESHERS: Mapping[str, TokenRefresher] = MappingProxyType(
    {"instagram": InstagramRefresher(), "tiktok": TikTokRefresher()}
)
