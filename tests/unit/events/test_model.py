"""The event schema: normalisation, validation rules and snapshot-to-delta arithmetic."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypemeter.clock import FixedClock
from hypemeter.events.codec import field_of
from hypemeter.events.model import (
    BUILTIN_METRICS,
    MAX_ID_LENGTH,
    MAX_TAGS,
    PLATFORMS,
    EventIn,
    EventInvalid,
    MetricCatalog,
    MetricKind,
    Reading,
    ValidationRules,
    check_custom_metric_name,
    normalize_platform,
    snapshot_delta,
    to_epoch_us,
    validate_event,
)

NOW = dt.datetime(2026, 11, 20, 14, 0, tzinfo=dt.UTC)
CLOCK = FixedClock(to_epoch_us(NOW))
HOUR_US = 3600 * 1_000_000
RETENTION_DAYS = 400
RULES = ValidationRules(
    now_us=CLOCK.now_us(),
    max_future_us=HOUR_US,
    retention_us=RETENTION_DAYS * 24 * HOUR_US,
)
DECODER = msgspec.json.Decoder(EventIn)


def payload(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "influencer_id": "inf-1",
        "platform": "instagram",
        "metric": "likes",
        "ts": "2026-11-20T13:59:00Z",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def admit(data: dict[str, Any], catalog: MetricCatalog | None = None) -> tuple[EventIn, int]:
    """Decode and validate one event the way ingest does; returns the event and its ts."""
    event = DECODER.decode(msgspec.json.encode(data))
    return event, validate_event(event, catalog or MetricCatalog(), RULES)


def rejection(data: dict[str, Any], catalog: MetricCatalog | None = None) -> tuple[str | None, str]:
    """The (field, message) ingest reports for an invalid event, wherever the rule lives."""
    try:
        admit(data, catalog)
    except msgspec.ValidationError as exc:
        return field_of(exc), str(exc)
    except EventInvalid as exc:
        return exc.field, exc.message
    pytest.fail(f"event was accepted: {data}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("instagram", "instagram"),
        ("Instagram", "instagram"),
        ("  TIKTOK ", "tiktok"),
        ("twitter", "x"),
        ("Twitter", "x"),
        ("X", "x"),
        ("yt", "youtube"),
        ("IG", "instagram"),
        ("android", "app"),
        ("website", "web"),
    ],
)
def test_platform_names_and_aliases_normalise(raw: str, expected: str) -> None:
    assert normalize_platform(raw) == expected
    event, _ = admit(payload(platform=raw))
    assert event.platform == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("likes", "likes"),
        ("LIKES", "likes"),
        ("like", "likes"),
        ("Like", "likes"),
        ("video-view", "views"),
        ("Video View", "views"),
        ("video_views", "views"),
        ("retweet", "shares"),
        ("subscribers", "followers"),
        ("vote", "votes"),
    ],
)
def test_metric_names_and_aliases_normalise(raw: str, expected: str) -> None:
    assert MetricCatalog().normalize(raw) == expected
    kind = "snapshot" if expected == "followers" else "delta"  # a gauge takes readings only
    event, _ = admit(payload(metric=raw, kind=kind))
    assert event.metric == expected


def test_a_gauge_rejects_increments() -> None:
    field, message = rejection(payload(metric="followers", kind="delta", value=5))
    assert field == "kind"
    assert "gauge" in message and "snapshot" in message


def test_unknown_platform_names_the_field_and_lists_allowed_values() -> None:
    field, message = rejection(payload(platform="myspace"))
    assert field == "platform"
    assert "'myspace'" in message
    for name in PLATFORMS:
        assert name in message


def test_unknown_metric_names_the_field_and_lists_allowed_values() -> None:
    field, message = rejection(payload(metric="applause"))
    assert field == "metric"
    assert "'applause'" in message
    for name in BUILTIN_METRICS:
        assert name in message


def test_custom_metric_is_accepted_only_by_its_catalog() -> None:
    catalog = MetricCatalog(custom={"story_replies": MetricKind.COUNTER})
    event, _ = admit(payload(metric="Story-Replies"), catalog)
    assert event.metric == "story_replies"
    assert catalog.kind_of("story_replies") is MetricKind.COUNTER
    assert catalog.kind_of("followers") is MetricKind.GAUGE
    assert catalog.allowed() == sorted([*BUILTIN_METRICS, "story_replies"])
    _, message = rejection(payload(metric="nope"), catalog)
    assert "story_replies" in message.split("allowed:")[1]
    field, message = rejection(payload(metric="story_replies"), MetricCatalog())
    assert field == "metric"
    assert "story_replies" not in message.split("allowed:")[1]


def test_custom_metric_added_after_a_miss_is_then_accepted() -> None:
    catalog = MetricCatalog()
    assert catalog.normalize("Dwell-Time") is None
    catalog.custom["dwell_time"] = MetricKind.COUNTER
    assert catalog.normalize("Dwell-Time") == "dwell_time"


@pytest.mark.parametrize(
    ("raw", "canon"),
    [("Story Replies", "story_replies"), ("dwell-time", "dwell_time"), ("x2", "x2")],
)
def test_custom_metric_names_are_canonical(raw: str, canon: str) -> None:
    assert check_custom_metric_name(raw) == canon


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "1-64"),
        ("a" * 65, "1-64"),
        ("bad!", "1-64"),
        ("likes", "built-in"),
        ("like", "built-in"),
        ("Video-View", "built-in"),
    ],
)
def test_custom_metric_names_rejected_with_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_custom_metric_name(raw)


def test_valid_event_returns_its_timestamp_in_microseconds() -> None:
    event, ts_us = admit(payload(ts="2026-11-20T16:00:00.000250+02:00"))
    assert ts_us == to_epoch_us(NOW) + 250
    assert event.kind == "delta"
    assert event.value == 1.0


def test_ts_without_offset_is_rejected() -> None:
    field, message = rejection(payload(ts="2026-11-20T13:00:00"))
    assert field == "ts"
    assert "offset" in message


def test_ts_up_to_max_future_is_accepted_beyond_rejected() -> None:
    _, ts_us = admit(payload(ts="2026-11-20T15:00:00Z"))
    assert ts_us == RULES.latest_us
    field, message = rejection(payload(ts="2026-11-20T15:00:00.000001Z"))
    assert field == "ts"
    assert "max_future_seconds" in message


def test_ts_older_than_retention_is_rejected() -> None:
    oldest = NOW - dt.timedelta(days=RETENTION_DAYS)
    _, ts_us = admit(payload(ts=oldest.isoformat()))
    assert ts_us == RULES.earliest_us
    older = oldest - dt.timedelta(microseconds=1)
    field, message = rejection(payload(ts=older.isoformat()))
    assert field == "ts"
    assert "retention" in message


@pytest.mark.parametrize(("raw", "kind"), [("delta", "delta"), ("Snapshot", "snapshot")])
def test_kind_is_normalised(raw: str, kind: str) -> None:
    event, _ = admit(payload(kind=raw))
    assert event.kind == kind


def test_unknown_kind_is_rejected() -> None:
    field, message = rejection(payload(kind="gauge"))
    assert field == "kind"
    assert "'delta' or 'snapshot'" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_value_is_rejected(value: float) -> None:
    event = EventIn(influencer_id="i", platform="x", metric="likes", ts=NOW, value=value)
    with pytest.raises(EventInvalid) as caught:
        validate_event(event, MetricCatalog(), RULES)
    assert caught.value.field == "value"
    assert "finite" in caught.value.message


def test_out_of_range_number_on_the_wire_is_rejected() -> None:
    field, _ = rejection(payload(value=1e400))
    assert field == "value"


def test_negative_snapshot_is_rejected_negative_delta_is_not() -> None:
    field, message = rejection(payload(kind="snapshot", value=-1))
    assert field == "value"
    assert "negative" in message
    event, _ = admit(payload(kind="delta", value=-1))
    assert event.value == -1


@pytest.mark.parametrize(
    "name", ["influencer_id", "event_id", "content_id", "campaign_id", "user_id", "variant"]
)
def test_id_lengths_are_bounded(name: str) -> None:
    event, _ = admit(payload(**{name: "a" * MAX_ID_LENGTH}))
    assert getattr(event, name) == "a" * MAX_ID_LENGTH
    for bad in ("", "a" * (MAX_ID_LENGTH + 1)):
        field, _ = rejection(payload(**{name: bad}))
        assert field == name


@pytest.mark.parametrize("name", ["influencer_id", "platform", "metric", "ts"])
def test_required_fields_are_named_when_missing(name: str) -> None:
    data = payload()
    del data[name]
    field, message = rejection(data)
    assert field == name
    assert name in message


def test_tags_are_limited() -> None:
    event, _ = admit(payload(tags=[f"t{i}" for i in range(MAX_TAGS)]))
    assert event.tags is not None
    assert len(event.tags) == MAX_TAGS
    field, _ = rejection(payload(tags=[f"t{i}" for i in range(MAX_TAGS + 1)]))
    assert field == "tags"


def test_first_snapshot_counts_from_zero() -> None:
    reading = Reading(ts_us=10, value=120.0)
    assert snapshot_delta(None, reading) == (120.0, reading)


def test_higher_snapshot_gives_the_increase() -> None:
    newer = Reading(ts_us=20, value=150.0)
    assert snapshot_delta(Reading(10, 120.0), newer) == (30.0, newer)


def test_lower_snapshot_gives_a_negative_delta() -> None:
    newer = Reading(ts_us=20, value=100.0)
    assert snapshot_delta(Reading(10, 120.0), newer) == (-20.0, newer)


def test_older_snapshot_changes_nothing() -> None:
    previous = Reading(ts_us=20, value=120.0)
    assert snapshot_delta(previous, Reading(10, 999.0)) == (0.0, previous)


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
        min_size=1,
        max_size=30,
        unique_by=lambda r: r[0],
    )
)
def test_snapshot_deltas_sum_to_the_latest_reading_whatever_the_arrival_order(
    readings: list[tuple[int, int]],
) -> None:
    state: Reading | None = None
    total = 0.0
    for ts_us, value in readings:
        delta, state = snapshot_delta(state, Reading(ts_us, float(value)))
        total += delta
    latest = max(readings)
    assert state == Reading(latest[0], float(latest[1]))
    assert total == latest[1]
