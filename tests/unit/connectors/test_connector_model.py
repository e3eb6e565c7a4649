"""Connector model rules: credential lifetimes become expiry times, and what only
admins see is taken out of a view."""

from __future__ import annotations

import pytest

from hypemeter.connectors.model import (
    DeadLetter,
    check_polling,
    letter_summary,
    with_expiry_times,
    without_details,
)
from hypemeter.connectors.polling.tokens import MAX_LIFETIME_S, format_time
from hypemeter.errors import InvalidInput

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z


def test_lifetimes_become_times_from_now_and_every_value_a_string() -> None:
    credential = {
        "access_token": "act",
        "refresh_token": "rft",
        "client_key": "ck",
        "expires_in": 86_400,
        "refresh_expires_in": "31536000",
    }
    check_polling("tiktok", [credential], {})
    assert with_expiry_times(credential, NOW_US) == {
        "access_token": "act",
        "refresh_token": "rft",
        "client_key": "ck",
        "expires_at": "2026-11-21T14:00:00.000000Z",
        "refresh_expires_at": "2027-11-20T14:00:00.000000Z",
    }
    given = {"access_token": "IGQ", "expires_at": "2027-01-19T14:00:00Z"}
    check_polling("instagram", [given], {})
    assert with_expiry_times(given, NOW_US) == given


@pytest.mark.parametrize(
    ("credential", "field"),
    [
        ({"access_token": "t", "expires_at": "next week"}, "credentials.0.expires_at"),
        ({"access_token": "t", "expires_at": "2027-01-19T14:00:00"}, "credentials.0.expires_at"),
        ({"access_token": "t", "expires_in": 0}, "credentials.0.expires_in"),
        ({"access_token": "t", "expires_in": "1e6"}, "credentials.0.expires_in"),
        ({"access_token": "t", "expires_in": True}, "credentials.0.expires_in"),
        ({"access_token": "t", "refresh_expires_in": -5}, "credentials.0.refresh_expires_in"),
        (
            {"access_token": "t", "expires_in": 60, "expires_at": "2027-01-19T14:00:00Z"},
            "credentials.0.expires_in",
        ),
        ({"access_token": "t", "refresh_token": 5}, "credentials.0"),
        # Beyond what a datetime holds, or any real token: refused, never a 500 later.
        ({"access_token": "t", "expires_in": 1_000_000_000_000}, "credentials.0.expires_in"),
        ({"access_token": "t", "expires_in": MAX_LIFETIME_S + 1}, "credentials.0.expires_in"),
        (
            {"access_token": "t", "refresh_expires_in": "99999999999999999999"},
            "credentials.0.refresh_expires_in",
        ),
        (
            {"access_token": "t", "expires_at": "9999-12-31T23:59:59-01:00"},
            "credentials.0.expires_at",
        ),
        (
            {"access_token": "t", "expires_at": "0001-01-01T00:00:00+01:00"},
            "credentials.0.expires_at",
        ),
        (
            {"access_token": "t", "refresh_expires_at": "2200-01-01T00:00:00.000001Z"},
            "credentials.0.refresh_expires_at",
        ),
        (
            {"access_token": "t", "expires_at": "1969-12-31T23:59:59Z"},
            "credentials.0.expires_at",
        ),
    ],
)
def test_a_bad_expiry_is_refused_naming_the_field(
    credential: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_polling("tiktok", [credential], {})
    assert refused.value.field == field


def test_expiries_at_the_edges_of_the_window_are_accepted() -> None:
    longest = {"access_token": "t", "expires_in": MAX_LIFETIME_S}
    check_polling("instagram", [longest], {})
    assert with_expiry_times(longest, NOW_US)["expires_at"] == format_time(
        NOW_US + MAX_LIFETIME_S * 1_000_000
    )
    for moment in ("1970-01-01T00:00:00Z", "2200-01-01T00:00:00Z", "2199-12-31T23:00:00-01:00"):
        check_polling("instagram", [{"access_token": "t", "expires_at": moment}], {})


def test_details_are_taken_out_at_any_depth() -> None:
    view = {
        "health": {"last_error": "x answered 403", "last_error_detail": "their words"},
        "polling": {"tokens": {"refresh_error": "refused", "refresh_error_detail": "theirs"}},
        "list": [{"a_detail": 1, "b": 2}],
    }
    assert without_details(view) == {
        "health": {"last_error": "x answered 403"},
        "polling": {"tokens": {"refresh_error": "refused"}},
        "list": [{"b": 2}],
    }


def test_a_dead_letter_shows_its_reasons_to_admins_and_their_summaries_to_others() -> None:
    letter = DeadLetter(
        id="dl_1",
        connector_id="con_1",
        platform="instagram",
        received_us=NOW_US,
        reasons=('unknown Meta webhook field \'x\': {"text": "private"}',),
        headers={},
        body_b64="",
        summaries=("unknown Meta webhook field 'x'",),
    )
    assert letter_summary(letter, admin=True)["reasons"] == list(letter.reasons)
    assert letter_summary(letter, admin=False) == {
        "id": "dl_1",
        "connector_id": "con_1",
        "platform": "instagram",
        "reasons": ["unknown Meta webhook field 'x'"],
    }
