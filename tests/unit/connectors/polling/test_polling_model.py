"""Polling model: value types, the token bucket, backoff, the schedule curve, YouTube's reset."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypemeter.connectors.polling import (
    DEFAULT_CURVE,
    Call,
    Reading,
    TokenBucket,
    backoff_s,
    next_pacific_midnight_us,
    parse_curve,
    poll_interval_s,
)

US = 1_000_000
DAY_S = 86_400


def epoch_us(*args: int) -> int:
    moment = dt.datetime(*args, tzinfo=dt.UTC)  # type: ignore[misc]
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def test_a_call_defaults_to_one_unit_and_no_body() -> None:
    call = Call("GET", "/x")
    assert (call.params, call.json, dict(call.headers), call.cost) == ((), None, {}, 1)
    assert (call.content_ids, call.account_ids) == ((), ())


@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan])
def test_a_reading_is_a_finite_count(value: float) -> None:
    with pytest.raises(ValueError, match="finite count"):
        Reading("v", None, "views", value)


def test_a_reading_names_a_hypemeter_metric() -> None:
    assert Reading(None, "UC1", "followers", 0.0).value == 0.0
    with pytest.raises(ValueError, match="unknown metric"):
        Reading("v", None, "favorites", 1.0)


# Token bucket


def test_the_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(capacity=2, refill_per_s=0.5, tokens=2.0, updated_us=0)
    assert bucket.take(0) and bucket.take(0)
    assert not bucket.take(0)
    assert bucket.wait_us(0) == 2 * US
    assert not bucket.take(2 * US - 1)
    assert bucket.take(2 * US)
    assert bucket.wait_us(2 * US, 2) == 4 * US


def test_the_bucket_never_holds_more_than_its_capacity() -> None:
    bucket = TokenBucket(capacity=3, refill_per_s=1.0, tokens=10.0, updated_us=0)
    assert bucket.tokens == 3
    assert bucket.take(3600 * US, 3)
    assert not bucket.take(3600 * US)


def test_a_clock_going_back_refills_nothing() -> None:
    bucket = TokenBucket(capacity=1, refill_per_s=1.0, tokens=1.0, updated_us=10 * US)
    assert bucket.take(10 * US)
    assert not bucket.take(5 * US)
    assert bucket.wait_us(5 * US) == 6 * US  # the token comes 1 s after the last update
    assert bucket.updated_us == 10 * US


def test_the_bucket_refuses_what_it_can_never_give() -> None:
    bucket = TokenBucket(capacity=2, refill_per_s=1.0, tokens=0.0, updated_us=0)
    with pytest.raises(ValueError, match="capacity"):
        bucket.wait_us(0, 3)
    with pytest.raises(ValueError, match="capacity > 0"):
        TokenBucket(capacity=0, refill_per_s=1.0, tokens=0.0, updated_us=0)
    with pytest.raises(ValueError, match="refill rate"):
        TokenBucket(capacity=1, refill_per_s=0.0, tokens=0.0, updated_us=0)


operations = st.lists(
    st.tuples(st.integers(0, 5 * US), st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0])), max_size=60
)


@given(
    capacity=st.integers(1, 20),
    refill=st.floats(0.01, 50.0),
    start=st.integers(0, 2**50),
    ops=operations,
)
def test_the_bucket_never_gives_more_than_its_burst_plus_its_refill(
    capacity: int, refill: float, start: int, ops: list[tuple[int, float]]
) -> None:
    bucket = TokenBucket(capacity, refill, float(capacity), start)
    now, taken = start, 0.0
    for step_us, n in ops:
        now += step_us
        if bucket.take(now, n):
            taken += n
        assert 0 <= bucket.tokens <= capacity
    elapsed_s = (now - start) / US
    assert taken <= capacity + refill * elapsed_s + 1e-6


@given(
    capacity=st.integers(1, 20),
    refill=st.floats(0.01, 50.0),
    tokens=st.floats(0.0, 20.0),
    n=st.floats(0.1, 20.0),
    now=st.integers(0, 2**50),
)
def test_wait_us_is_exactly_when_the_tokens_are_there(
    capacity: int, refill: float, tokens: float, n: float, now: int
) -> None:
    if n > capacity:
        return
    bucket = TokenBucket(capacity, refill, tokens, now)
    wait = bucket.wait_us(now, n)
    if wait > 0:
        assert not dataclasses.replace(bucket).take(now + wait - 1, n)
    assert bucket.take(now + wait, n)


# Backoff


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    assert backoff_s(0, base_s=1.0, cap_s=300.0, draw=0.5) == 0.5
    assert backoff_s(3, base_s=1.0, cap_s=300.0, draw=0.5) == 4.0
    assert backoff_s(20, base_s=1.0, cap_s=300.0, draw=0.5) == 150.0
    assert backoff_s(10**9, base_s=1.0, cap_s=300.0, draw=0.999) == pytest.approx(299.7)
    assert backoff_s(3, base_s=1.0, cap_s=300.0, draw=0.0) == 0.0


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "draw"),
    [(-1, 1.0, 1.0, 0.5), (0, -1.0, 1.0, 0.5), (0, 1.0, -1.0, 0.5), (0, 1.0, 1.0, 1.0)],
)
def test_backoff_refuses_impossible_arguments(
    attempt: int, base: float, cap: float, draw: float
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        backoff_s(attempt, base_s=base, cap_s=cap, draw=draw)


@given(
    attempt=st.integers(0, 5000),
    base=st.floats(0.0, 100.0),
    cap=st.floats(0.0, 3600.0),
    draw=st.floats(0.0, 1.0, exclude_max=True),
)
def test_backoff_stays_within_its_bounds(
    attempt: int, base: float, cap: float, draw: float
) -> None:
    delay = backoff_s(attempt, base_s=base, cap_s=cap, draw=draw)
    assert 0.0 <= delay <= cap
    if attempt < 60:
        assert delay <= base * 2**attempt
    assert delay == draw * min(cap, base * 2.0 ** min(attempt, 1000))


# The schedule


@pytest.mark.parametrize(
    ("age_s", "interval_s"),
    [
        (0.0, 60.0),
        (-30.0, 60.0),  # published "in the future": clock skew, treated as brand new
        (3600.0, 60.0),
        (3600.5, 300.0),
        (DAY_S, 300.0),
        (DAY_S + 1, 1800.0),
        (7 * DAY_S, 1800.0),
        (7 * DAY_S + 1, 6 * 3600.0),
        (30 * DAY_S, 6 * 3600.0),
        (30 * DAY_S + 1, DAY_S),
        (10 * 365 * DAY_S, DAY_S),
        (math.inf, DAY_S),
        (math.nan, DAY_S),
        (None, DAY_S),
    ],
)
def test_the_default_curve_polls_fresh_content_often_and_old_content_daily(
    age_s: float | None, interval_s: float
) -> None:
    assert poll_interval_s(age_s) == interval_s


def test_past_the_last_age_of_a_curve_its_last_interval_holds() -> None:
    curve = ((60.0, 10.0), (600.0, 100.0))
    assert poll_interval_s(30, curve) == 10.0
    assert poll_interval_s(601, curve) == 100.0
    assert poll_interval_s(None, curve) == 100.0
    with pytest.raises(ValueError, match="empty"):
        poll_interval_s(5, ())


def test_a_configured_curve_is_read_from_json_lists() -> None:
    assert parse_curve([[3600, 30], [86400, 600.5], [None, 7200]]) == (
        (3600.0, 30.0),
        (86400.0, 600.5),
        (math.inf, 7200.0),
    )
    assert parse_curve(DEFAULT_CURVE) == DEFAULT_CURVE
    assert parse_curve([[0, 1]]) == ((0.0, 1.0),)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "non-empty list"),
        ([], "non-empty list"),
        ({"3600": 60}, "non-empty list"),
        ("[[3600, 60]]", "non-empty list"),
        ([[3600, 60], 5], r"item 1 \(5\): expected \[max_age_s, interval_s\]"),
        ([[3600, 60, 1]], r"item 0 .*expected"),
        ([["3600", 60]], "item 0 .*max_age_s must be a number"),
        ([[-1, 60]], "item 0 .*max_age_s must be a number >= 0"),
        ([[True, 60]], "item 0 .*max_age_s"),
        ([[math.nan, 60]], "item 0 .*max_age_s"),
        ([[3600, 0]], "item 0 .*interval_s must be a finite number > 0"),
        ([[3600, -5]], "item 0 .*interval_s"),
        ([[3600, None]], "item 0 .*interval_s"),
        ([[3600, math.inf]], "item 0 .*interval_s"),
        ([[3600, 60], [3600, 300]], "item 1 .*greater than the item before"),
        ([[86400, 60], [3600, 300]], "item 1 .*greater than the item before"),
        ([[None, 60], [3600, 300]], "item 1 .*greater than the item before"),
    ],
)
def test_a_bad_curve_is_refused_naming_the_item(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_curve(raw)


# YouTube's quota day


@pytest.mark.parametrize(
    ("now", "midnight"),
    [
        # Winter (PST, UTC-8): local midnight is 08:00 UTC.
        ((2026, 11, 20, 14, 0), (2026, 11, 21, 8, 0)),
        # Summer (PDT, UTC-7): 07:00 UTC.
        ((2026, 7, 1, 6, 59), (2026, 7, 1, 7, 0)),
        ((2026, 7, 1, 7, 0), (2026, 7, 2, 7, 0)),  # at midnight: the next one
        # Spring forward (2026-03-08, 02:00 PST -> 03:00 PDT).
        ((2026, 3, 7, 20, 0), (2026, 3, 8, 8, 0)),
        ((2026, 3, 8, 12, 0), (2026, 3, 9, 7, 0)),  # a 23-hour day
        # Fall back (2026-11-01, 02:00 PDT -> 01:00 PST).
        ((2026, 10, 31, 20, 0), (2026, 11, 1, 7, 0)),
        ((2026, 11, 1, 12, 0), (2026, 11, 2, 8, 0)),  # a 25-hour day
        # Across the year.
        ((2026, 12, 31, 23, 0), (2027, 1, 1, 8, 0)),
    ],
)
def test_the_next_pacific_midnight(now: tuple[int, ...], midnight: tuple[int, ...]) -> None:
    assert next_pacific_midnight_us(epoch_us(*now)) == epoch_us(*midnight)


def test_the_pacific_day_is_23_or_25_hours_long_at_the_dst_changes() -> None:
    march_8 = epoch_us(2026, 3, 8, 8, 0)
    assert next_pacific_midnight_us(march_8) - march_8 == 23 * 3600 * US
    november_1 = epoch_us(2026, 11, 1, 7, 0)
    assert next_pacific_midnight_us(november_1) - november_1 == 25 * 3600 * US
    assert next_pacific_midnight_us(march_8 - 1) == march_8
