"""Rules of the query API: covers, ranges, buckets, metric plans, gauges, cursors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypemeter.errors import InvalidInput
from hypemeter.events.model import MetricCatalog, MetricKind
from hypemeter.metrics.model import (
    DAY_US,
    FINEST_FIRST,
    HOUR_US,
    MINUTE_US,
    AccountReadings,
    Columns,
    Frame,
    Grain,
    TimeRange,
    bucket_starts,
    choose_grain,
    cover,
    decode_cursor,
    emv_table,
    encode_cursor,
    gauge_series,
    metric_value,
    page_after,
    parse_instant,
    plain_number,
    plan_metrics,
    resolve_range,
)

NOW = 1_790_000_123_456_789  # 2026-09-21T...: not on any bucket boundary
RETENTION = 400 * DAY_US

instants = st.integers(min_value=0, max_value=40 * DAY_US).map(lambda x: 1_780_000_000_000_000 + x)
grain_sets = st.lists(st.sampled_from(FINEST_FIRST), unique=True, max_size=3)


@given(instants, st.integers(min_value=0, max_value=20 * DAY_US), grain_sets)
def test_cover_is_exact_disjoint_and_aligned(start: int, span: int, grains: list[Grain]) -> None:
    end = start + span
    pieces = cover(start, end, grains)
    position = start
    for piece in pieces:
        assert piece.start_us == position < piece.end_us
        position = piece.end_us
        if piece.grain is not None:
            assert piece.grain in grains
            assert piece.start_us % piece.grain.us == 0
            assert piece.end_us % piece.grain.us == 0
    assert position == end or (not pieces and start == end)
    raw = [p for p in pieces if p.grain is None]
    assert len(raw) <= 2  # only the ragged ends are read raw


def test_cover_uses_the_coarsest_grain_that_fits() -> None:
    start = 1_780_000_000_000_000 - 1_780_000_000_000_000 % DAY_US
    pieces = cover(start - 90 * MINUTE_US - 5, start + DAY_US + 61 * MINUTE_US, FINEST_FIRST)
    assert [(p.grain, p.end_us - p.start_us) for p in pieces] == [
        (None, 5),
        (Grain.MINUTE, 30 * MINUTE_US),
        (Grain.HOUR, HOUR_US),
        (Grain.DAY, DAY_US),
        (Grain.HOUR, HOUR_US),
        (Grain.MINUTE, MINUTE_US),
    ]


def test_period_ends_at_the_end_of_the_current_minute() -> None:
    got = resolve_range(start=None, end=None, period="24h", now_us=NOW, retention_us=RETENTION)
    assert got.end_us % MINUTE_US == 0
    assert 0 < got.end_us - NOW <= MINUTE_US
    assert got.end_us - got.start_us == DAY_US


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"period": "7x"}, "period"),
        ({"period": "0h"}, "period"),
        ({"period": "401d"}, "period"),
        ({"period": "1h", "start": "2026-09-20T00:00:00Z"}, "period"),
        ({"start": "2026-09-20T00:00:00Z", "end": "2026-09-19T00:00:00Z"}, "end"),
        ({"start": "2026-09-20T00:00:00Z", "end": "2026-09-20T00:00:00Z"}, "end"),
        ({"start": "2020-01-01T00:00:00Z"}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-09-20T00:00:00"}, "start"),
    ],
)
def test_bad_ranges_name_the_parameter(kwargs: dict[str, str], field: str) -> None:
    args: dict[str, str | None] = {"start": None, "end": None, "period": None, **kwargs}
    with pytest.raises(InvalidInput) as caught:
        resolve_range(**args, now_us=NOW, retention_us=RETENTION)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_auto_granularity_keeps_at_most_500_buckets() -> None:
    def span(us: int) -> TimeRange:
        return TimeRange(NOW - us, NOW)

    assert choose_grain(span(HOUR_US), "auto") is Grain.MINUTE
    assert choose_grain(span(7 * DAY_US), "auto") is Grain.HOUR
    assert choose_grain(span(30 * DAY_US), "auto") is Grain.DAY
    with pytest.raises(InvalidInput) as caught:
        choose_grain(span(30 * DAY_US), "minute")
    assert caught.value.field == "granularity"
    assert "10000" in caught.value.message


def test_buckets_start_at_the_bucket_holding_start() -> None:
    start = parse_instant("2026-11-20T14:30:00Z", "start")
    end = parse_instant("2026-11-20T16:00:00.000001Z", "end")
    starts = bucket_starts(TimeRange(start, end), Grain.HOUR)
    assert starts == [start - 30 * MINUTE_US, start + 30 * MINUTE_US, start + 90 * MINUTE_US]


def test_plan_lists_the_stored_metrics_derived_ones_read() -> None:
    catalog = MetricCatalog(custom={"story_replies": MetricKind.COUNTER})
    plan = plan_metrics("engagement_rate, ctr,Likes,story_replies", catalog)
    assert plan.names == ("engagement_rate", "ctr", "likes", "story_replies")
    assert set(plan.counters) == {
        "likes",
        "comments",
        "shares",
        "saves",
        "clicks",
        "impressions",
        "story_replies",
    }
    assert plan.gauges == ("followers",)
    with pytest.raises(InvalidInput) as caught:
        plan_metrics("likes,telepathy", catalog)
    assert caught.value.field == "metrics"
    assert "engagement_rate" in caught.value.message and "story_replies" in caught.value.message


def test_derived_values_and_zero_denominators() -> None:
    catalog = MetricCatalog()
    frame = Frame()
    for platform, metric, value in [
        ("instagram", "likes", 30.0),
        ("tiktok", "likes", 10.0),
        ("instagram", "comments", 10.0),
        ("instagram", "clicks", 5.0),
        ("instagram", "impressions", 200.0),
    ]:
        frame.add(platform, metric, value)
    frame.base["followers"] = 1000.0
    frame.growth["followers"] = 50.0
    rates = emv_table(["instagram", "tiktok"], {("tiktok", "likes"): 1.0})

    def value(name: str) -> float | None:
        return metric_value(name, frame, catalog, rates)

    assert value("engagement") == 50
    assert value("engagement_rate") == pytest.approx(5.0)
    assert value("ctr") == pytest.approx(2.5)
    assert value("conversion_rate") == 0.0
    assert value("engagement_rate_by_views") is None
    assert value("follower_growth_pct") == pytest.approx(5.0)
    assert value("emv") == pytest.approx(30 * 0.10 + 10 * 1.0 + 10 * 0.5 + 5 * 1.0 + 200 * 0.005)
    frame.base["followers"] = 0.0
    assert value("engagement_rate") is None


def test_gauge_series_sums_accounts_and_growth_adds_up() -> None:
    buckets = [0, 10, 20]
    # Account a: 100 before the range, 120 in bucket 10. Account b: first reading 50 in bucket 20.
    a = AccountReadings(at_start=(-5, 100.0), first=(12, 120.0), bucket_last={10: (12, 120.0)})
    b = AccountReadings(first=(25, 50.0), bucket_last={20: (25, 50.0)})
    values, base, growth = gauge_series([a, b], buckets)
    assert values == [100.0, 120.0, 170.0]
    assert base == 150.0
    assert growth == [0.0, 20.0, 0.0]
    assert AccountReadings().start_value() is None


def test_cursor_round_trip_and_scope_binding() -> None:
    cursor = encode_cursor("aggregate|acme|likes", [False, -12.0, "instagram"])
    assert decode_cursor(cursor, "aggregate|acme|likes") == [False, -12.0, "instagram"]
    for bad, scope in [(cursor, "aggregate|globex|likes"), ("%%%", "x"), ("e30", "x")]:
        with pytest.raises(InvalidInput) as caught:
            decode_cursor(bad, scope)
        assert caught.value.field == "cursor"


@given(st.lists(st.integers(-5, 5), max_size=30), st.integers(1, 7))
def test_pages_cover_every_row_once(values: list[int], limit: int) -> None:
    rows = sorted((f"k{i}", float(v)) for i, v in enumerate(values))

    def key(row: tuple[str, float]) -> tuple[float, str]:
        return (-row[1], row[0])

    ordered = sorted(rows, key=key)
    seen: list[tuple[str, float]] = []
    after = None
    while True:
        page, after, offset = page_after(ordered, key, after, limit)
        assert offset == len(seen)
        seen.extend(page)
        if after is None:
            break
    assert seen == ordered


def test_plain_numbers() -> None:
    assert plain_number(3.0) == 3 and isinstance(plain_number(3.0), int)
    assert plain_number(2.5) == 2.5
    assert plain_number(None) is None


cells = st.one_of(
    st.none(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),  # commas, quotes and escapes included
    st.lists(st.text(alphabet=',a"', max_size=3), max_size=3),
)


@settings(deadline=None)  # the first example pays for warming the encoder
@given(
    st.integers(min_value=0, max_value=6).flatmap(
        lambda rows: st.lists(st.lists(cells, min_size=rows, max_size=rows), min_size=1, max_size=4)
    )
)
def test_columns_encode_the_rows_they_hold(columns: list[list[object]]) -> None:
    keys = [f"k{i}," for i in range(len(columns))]
    table = Columns(keys, columns)
    assert json.loads(table.json()) == [
        dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)
    ]
