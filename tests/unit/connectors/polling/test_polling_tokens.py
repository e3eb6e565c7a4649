"""Refreshing Instagram long-lived tokens and TikTok user tokens: when, how, what comes back."""

from __future__ import annotations

import json

import pytest

from hypemeter.connectors.polling import Call, PollError
from hypemeter.connectors.polling.tokens import (
    MAX_LIFETIME_S,
    REFRESHERS,
    format_time,
    parse_time_us,
    refresh_due,
)

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
DAY_US = 86_400 * 1_000_000
INSTAGRAM = REFRESHERS["instagram"]
TIKTOK = REFRESHERS["tiktok"]
TIKTOK_SECRETS = {"client_secret": "tt-client-secret"}


def test_times_are_rfc3339_in_utc() -> None:
    assert format_time(NOW_US) == "2026-11-20T14:00:00.000000Z"
    assert parse_time_us("2026-11-20T14:00:00Z") == NOW_US
    assert parse_time_us("2026-11-20T16:00:00+02:00") == NOW_US
    assert parse_time_us("2026-11-20T14:00:00") is None  # no offset: ambiguous
    assert parse_time_us("soon") is None


def test_a_token_is_due_within_its_platforms_margin_and_never_without_an_expiry() -> None:
    week_s = 7 * 86_400
    in_8_days = {"access_token": "t", "expires_at": format_time(NOW_US + 8 * DAY_US)}
    in_6_days = {"access_token": "t", "expires_at": format_time(NOW_US + 6 * DAY_US)}
    gone = {"access_token": "t", "expires_at": format_time(NOW_US - DAY_US)}
    assert INSTAGRAM.margin_s == week_s
    assert not refresh_due(in_8_days, week_s, NOW_US)
    assert refresh_due(in_6_days, week_s, NOW_US)
    assert refresh_due(gone, week_s, NOW_US)  # tried all the same: the platform decides
    assert not refresh_due({"access_token": "t"}, week_s, NOW_US)
    assert TIKTOK.margin_s == 15 * 60


def test_instagram_refreshes_with_the_documented_request() -> None:
    call = INSTAGRAM.call({"access_token": "IGQold", "expires_at": "x"}, {}, NOW_US)
    assert call == Call(
        "GET",
        "/refresh_access_token",
        params=(("grant_type", "ig_refresh_token"), ("access_token", "IGQold")),
    )
    with pytest.raises(PollError, match="access_token"):
        INSTAGRAM.call({}, {}, NOW_US)


def test_instagram_answers_a_new_token_valid_for_its_expires_in() -> None:
    body = {"access_token": "IGQnew", "token_type": "bearer", "expires_in": 5183944}
    fields = INSTAGRAM.read(200, json.dumps(body).encode(), NOW_US)
    assert fields == {
        "access_token": "IGQnew",
        "expires_at": format_time(NOW_US + 5183944 * 1_000_000),
    }


def test_an_instagram_refusal_keeps_the_platforms_words_apart() -> None:
    body = {
        "error": {"message": "Error validating access token", "type": "OAuthException", "code": 190}
    }
    with pytest.raises(PollError) as refused:
        INSTAGRAM.read(400, json.dumps(body).encode(), NOW_US)
    assert refused.value.reason == "instagram token refresh refused: HTTP 400, error 190"
    assert refused.value.upstream == "Error validating access token"
    with pytest.raises(PollError, match="no valid expires_in"):
        INSTAGRAM.read(200, b'{"access_token": "IGQnew", "expires_in": "soon"}', NOW_US)
    with pytest.raises(PollError, match="not in the documented format") as garbled:
        INSTAGRAM.read(502, b"<html>Bad gateway</html>", NOW_US)
    assert garbled.value.upstream == "<html>Bad gateway</html>"


@pytest.mark.parametrize("lifetime", ["1e300", str(10**30), str(MAX_LIFETIME_S + 1), "0", "-1"])
def test_a_lifetime_no_token_has_is_a_refusal_not_an_overflow(lifetime: str) -> None:
    with pytest.raises(PollError, match="no valid expires_in"):
        INSTAGRAM.read(
            200, b'{"access_token": "new", "expires_in": %s}' % lifetime.encode(), NOW_US
        )
    answer = {"access_token": "act", "expires_in": 86400, "refresh_token": "rft"}
    body = json.dumps(answer)[:-1] + f', "refresh_expires_in": {lifetime}}}'
    with pytest.raises(PollError, match="no valid refresh_expires_in"):
        TIKTOK.read(200, body.encode(), NOW_US)


def test_tiktok_refreshes_with_its_refresh_token_the_client_key_and_secret() -> None:
    credential = {"access_token": "act.old", "refresh_token": "rft.old", "client_key": "ck1"}
    call = TIKTOK.call(credential, TIKTOK_SECRETS, NOW_US)
    assert call == Call(
        "POST",
        "/v2/oauth/token/",
        form={
            "client_key": "ck1",
            "client_secret": "tt-client-secret",
            "grant_type": "refresh_token",
            "refresh_token": "rft.old",
        },
    )
    assert call.params == () and call.headers == {}  # nothing secret in the URL


def test_tiktok_cannot_refresh_without_what_it_needs() -> None:
    with pytest.raises(PollError, match="refresh_token"):
        TIKTOK.call({"access_token": "a", "client_key": "ck"}, TIKTOK_SECRETS, NOW_US)
    with pytest.raises(PollError, match="client_key"):
        TIKTOK.call({"access_token": "a", "refresh_token": "r"}, TIKTOK_SECRETS, NOW_US)
    with pytest.raises(PollError, match="client_secret"):
        TIKTOK.call({"refresh_token": "r", "client_key": "ck"}, {}, NOW_US)
    expired = {
        "refresh_token": "r",
        "client_key": "ck",
        "refresh_expires_at": format_time(NOW_US - 1),
    }
    with pytest.raises(PollError, match="must authorize the app again"):
        TIKTOK.call(expired, TIKTOK_SECRETS, NOW_US)


def test_tiktok_rotates_the_refresh_token() -> None:
    body = {
        "access_token": "act.new",
        "expires_in": 86400,
        "open_id": "afd97af1",
        "refresh_expires_in": 31536000,
        "refresh_token": "rft.new",
        "scope": "user.info.basic,video.list",
        "token_type": "Bearer",
    }
    assert TIKTOK.read(200, json.dumps(body).encode(), NOW_US) == {
        "access_token": "act.new",
        "expires_at": format_time(NOW_US + DAY_US),
        "refresh_token": "rft.new",
        "refresh_expires_at": format_time(NOW_US + 365 * DAY_US),
    }


def test_a_tiktok_refusal_keeps_the_platforms_words_apart() -> None:
    body = {
        "error": "invalid_grant",
        "error_description": "Refresh token is invalid or expired.",
        "log_id": "20261120",
    }
    with pytest.raises(PollError) as refused:
        TIKTOK.read(400, json.dumps(body).encode(), NOW_US)
    assert refused.value.reason == (
        "tiktok token refresh refused: HTTP 400, error invalid_grant (log_id 20261120)"
    )
    assert refused.value.upstream == "Refresh token is invalid or expired."
