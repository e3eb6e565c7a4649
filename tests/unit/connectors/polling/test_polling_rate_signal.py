"""rate_signal: Retry-After, Meta's usage headers, X's and Twitch's limit headers."""

from __future__ import annotations

import json

import pytest

from hypemeter.connectors.polling import RateSignal, rate_signal

US = 1_000_000
NOW_S = 1_795_183_200  # 2026-11-20T14:00:00Z
NOW = NOW_S * US
HOUR = 3600 * US


def usage(**values: object) -> str:
    return json.dumps(values)


def business(*entries: dict[str, object], account: str = "17841400000000000") -> str:
    return json.dumps({account: list(entries)})


def test_no_headers_say_nothing() -> None:
    assert rate_signal(200, {}, NOW) == RateSignal()


def test_a_429_without_a_time_leaves_the_backoff_to_the_caller() -> None:
    signal = rate_signal(429, {"content-type": "application/json"}, NOW)
    assert signal.pause_until_us is None
    assert signal.reason == "429 without a reset time"


@pytest.mark.parametrize(
    ("value", "pause"),
    [
        ("120", NOW + 120 * US),
        (" 0 ", NOW),
        ("Fri, 20 Nov 2026 14:05:00 GMT", NOW + 300 * US),
        ("Fri, 20 Nov 2026 15:05:00 +0100", NOW + 300 * US),
        ("Fri, 20 Nov 2026 14:05:00 -0000", NOW + 300 * US),  # no zone stated: UTC
        ("Thu, 19 Nov 2026 14:00:00 GMT", NOW),  # already past: retry now
    ],
)
def test_retry_after_as_seconds_or_http_date(value: str, pause: int) -> None:
    for status in (429, 503, 200):
        signal = rate_signal(status, {"retry-after": value}, NOW)
        assert (signal.pause_until_us, signal.reason) == (pause, "Retry-After")


@pytest.mark.parametrize("value", ["soon", "-5", "1.5", "", "Fri, 99 Nov 2026 25:00:00 GMT", "٣"])
def test_a_malformed_retry_after_is_ignored(value: str) -> None:
    assert rate_signal(503, {"retry-after": value}, NOW).pause_until_us is None


def test_header_names_are_matched_in_any_case() -> None:
    assert rate_signal(429, {"Retry-After": "7"}, NOW).pause_until_us == NOW + 7 * US


def test_app_usage_below_100_reports_the_highest_percent() -> None:
    signal = rate_signal(
        200, {"x-app-usage": usage(call_count=28, total_time=25, total_cputime=91)}, NOW
    )
    assert signal == RateSignal(used_percent=91.0)


def test_app_usage_at_100_pauses_an_hour_unless_retry_after_says_otherwise() -> None:
    headers = {"x-app-usage": usage(call_count=100, total_time=40, total_cputime=12)}
    signal = rate_signal(200, headers, NOW)
    assert signal.pause_until_us == NOW + HOUR
    assert signal.reason == "Meta usage at 100%"
    assert signal.used_percent == 100
    told = rate_signal(429, {**headers, "retry-after": "30"}, NOW)
    assert (told.pause_until_us, told.reason) == (NOW + 30 * US, "Retry-After")


def test_business_use_case_usage_pauses_for_the_minutes_it_names() -> None:
    headers = {
        "x-business-use-case-usage": json.dumps(
            {
                "1": [
                    {
                        "type": "instagram",
                        "call_count": 70,
                        "total_cputime": 5,
                        "total_time": 9,
                        "estimated_time_to_regain_access": 0,
                    }
                ],
                "2": [{"type": "pages", "call_count": 20, "estimated_time_to_regain_access": 5}],
            }
        )
    }
    signal = rate_signal(200, headers, NOW)
    assert signal.pause_until_us == NOW + 5 * 60 * US
    assert signal.reason == "Meta: estimated_time_to_regain_access"
    assert signal.used_percent == 70


def test_business_use_case_usage_at_100_without_minutes_pauses_an_hour() -> None:
    headers = {
        "x-business-use-case-usage": business(
            {"call_count": 100, "total_time": 3, "estimated_time_to_regain_access": 0}
        )
    }
    assert rate_signal(200, headers, NOW).pause_until_us == NOW + HOUR


@pytest.mark.parametrize(
    "headers",
    [
        {"x-app-usage": "{not json"},
        {"x-app-usage": "[100]"},
        {"x-app-usage": usage(call_count="100", total_time=True)},
        {"x-business-use-case-usage": "42"},
        {"x-business-use-case-usage": json.dumps({"1": {"call_count": 100}})},
        {"x-business-use-case-usage": json.dumps({"1": ["x", None, 100]})},
        {"x-business-use-case-usage": business({"estimated_time_to_regain_access": "5"})},
    ],
)
def test_malformed_meta_usage_is_ignored(headers: dict[str, str]) -> None:
    assert rate_signal(200, headers, NOW) == RateSignal()


def test_x_rate_limit_reports_the_window_and_pauses_at_zero_until_the_reset() -> None:
    reset = NOW_S + 600
    open_window = {
        "x-rate-limit-limit": "300",
        "x-rate-limit-remaining": "261",
        "x-rate-limit-reset": str(reset),
    }
    assert rate_signal(200, open_window, NOW) == RateSignal(remaining=261, limit=300)
    spent = {**open_window, "x-rate-limit-remaining": "0"}
    assert rate_signal(429, spent, NOW) == RateSignal(
        pause_until_us=reset * US, remaining=0, limit=300, reason="x-rate-limit-remaining is 0"
    )


def test_a_reset_already_past_pauses_nothing() -> None:
    headers = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(NOW_S - 1)}
    assert rate_signal(200, headers, NOW).pause_until_us is None


def test_malformed_x_rate_limit_headers_are_ignored() -> None:
    headers = {
        "x-rate-limit-limit": "lots",
        "x-rate-limit-remaining": "-1",
        "x-rate-limit-reset": "tomorrow",
    }
    assert rate_signal(200, headers, NOW) == RateSignal()
    zero_without_reset = {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "soon"}
    assert rate_signal(200, zero_without_reset, NOW) == RateSignal(remaining=0)


def test_twitch_ratelimit_headers_reset_at_a_unix_time() -> None:
    headers = {
        "Ratelimit-Limit": "800",
        "Ratelimit-Remaining": "0",
        "Ratelimit-Reset": str(NOW_S + 45),
    }
    assert rate_signal(429, headers, NOW) == RateSignal(
        pause_until_us=NOW + 45 * US, remaining=0, limit=800, reason="ratelimit-remaining is 0"
    )
    assert rate_signal(200, {**headers, "Ratelimit-Remaining": "799"}, NOW).pause_until_us is None


def test_a_small_ratelimit_reset_is_seconds_from_now() -> None:
    headers = {"ratelimit-limit": "100", "ratelimit-remaining": "0", "ratelimit-reset": "45"}
    assert rate_signal(429, headers, NOW).pause_until_us == NOW + 45 * US


def test_the_latest_explicit_time_wins() -> None:
    headers = {
        "retry-after": "60",
        "x-rate-limit-limit": "300",
        "x-rate-limit-remaining": "0",
        "x-rate-limit-reset": str(NOW_S + 900),
        "x-business-use-case-usage": business({"estimated_time_to_regain_access": 3}),
    }
    signal = rate_signal(429, headers, NOW)
    assert signal.pause_until_us == NOW + 900 * US
    assert signal.reason == "x-rate-limit-remaining is 0"
    assert (signal.remaining, signal.limit) == (0, 300)
