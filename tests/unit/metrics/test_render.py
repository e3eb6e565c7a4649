"""Typed answers of the query API written as the HTTP edge sends them: exact JSON, CSV."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from hypemeter.api import json_response
from hypemeter.metrics import render
from hypemeter.metrics.model import HOUR_US, Grain, TimeRange, parse_instant
from hypemeter.metrics.model.answers import (
    AggregatePage,
    EmvRateTable,
    GroupValue,
    InfluencerTotals,
    LeaderboardPage,
    RankedInfluencer,
    SeriesAnswer,
    Statistics,
    TrendingPage,
    UserActivityPage,
)
from hypemeter.metrics.queries import TrendingRow, UserRow

T0 = parse_instant("2026-11-18T00:00:00Z", "t0")
STATS = Statistics(elapsed_ms=1.25, rows_read=7)


def wire(body: dict[str, Any]) -> str:
    """The body's bytes as the API sends them."""
    response = json_response(Request({"type": "http", "headers": []}), body)
    return bytes(response.body).decode()


def series(**overrides: Any) -> SeriesAnswer:
    fields: dict[str, Any] = {
        "time_range": TimeRange(T0, T0 + 3 * HOUR_US),
        "granularity": Grain.HOUR,
        "metrics": ("likes", "ctr"),
        "values": {"likes": [3, 0, 2.5], "ctr": [None, 50.0, 12]},
        "totals": {"likes": 5.5, "ctr": 20},
        "statistics": STATS,
    }
    return SeriesAnswer(**{**fields, **overrides})


def test_series_body_puts_scope_first_and_one_row_per_bucket() -> None:
    body = render.series_body(series(), {"influencer_id": "inf-1"})
    assert list(body) == [
        "influencer_id",
        "start",
        "end",
        "granularity",
        "metrics",
        "series",
        "totals",
        "statistics",
    ]
    assert wire(body) == (
        '{"influencer_id":"inf-1","start":"2026-11-18T00:00:00Z","end":"2026-11-18T03:00:00Z",'
        '"granularity":"hour","metrics":["likes","ctr"],"series":['
        '{"ts":"2026-11-18T00:00:00Z","likes":3,"ctr":null},'
        '{"ts":"2026-11-18T01:00:00Z","likes":0,"ctr":50.0},'
        '{"ts":"2026-11-18T02:00:00Z","likes":2.5,"ctr":12}],'
        '"totals":{"likes":5.5,"ctr":20},"statistics":{"elapsed_ms":1.25,"rows_read":7}}'
    )


def test_series_body_of_a_campaign_lists_its_influencers_before_statistics() -> None:
    answer = series(
        metrics=("likes",),
        values={"likes": [1, 2, 3]},
        totals={"likes": 6},
        influencers=(
            InfluencerTotals("inf-a", {"likes": 4}),
            InfluencerTotals("inf-b", {"likes": 2}),
        ),
    )
    body = render.series_body(answer, {"campaign_id": "c-1"})
    assert next(iter(body)) == "campaign_id"
    assert list(body)[-2:] == ["influencers", "statistics"]
    assert wire(body).endswith(
        '"totals":{"likes":6},"influencers":[{"influencer_id":"inf-a","totals":{"likes":4}},'
        '{"influencer_id":"inf-b","totals":{"likes":2}}],'
        '"statistics":{"elapsed_ms":1.25,"rows_read":7}}'
    )
    empty = render.series_body(series(influencers=()), {"campaign_id": "c-1"})
    assert empty["influencers"] == []
    assert "influencers" not in render.series_body(series(), {})


def test_series_body_of_an_empty_range_has_no_rows() -> None:
    answer = series(
        time_range=TimeRange(T0, T0),
        metrics=("likes",),
        values={"likes": []},
        totals={"likes": 0},
    )
    assert '"series":[],"totals":{"likes":0}' in wire(render.series_body(answer, {}))


def test_series_csv_has_a_header_and_one_line_per_bucket() -> None:
    body = render.series_body(series(), {"influencer_id": "inf-1"})
    assert render.to_csv(body) == (
        "ts,likes,ctr\r\n"
        "2026-11-18T00:00:00Z,3,\r\n"
        "2026-11-18T01:00:00Z,0,50.0\r\n"
        "2026-11-18T02:00:00Z,2.5,12\r\n"
    )


def test_aggregate_body_writes_integral_values_as_integers() -> None:
    page = AggregatePage(
        (GroupValue("instagram", 12.0), GroupValue("x", 0.5), GroupValue("=cmd", None)),
        "next-page",
        STATS,
    )
    body = render.aggregate_body(page)
    assert wire(body) == (
        '{"data":[{"key":"instagram","value":12},{"key":"x","value":0.5},'
        '{"key":"=cmd","value":null}],"next_cursor":"next-page",'
        '"statistics":{"elapsed_ms":1.25,"rows_read":7}}'
    )
    assert render.to_csv(body, render.AGGREGATE_COLUMNS) == (
        "key,value\r\ninstagram,12\r\nx,0.5\r\n'=cmd,\r\n"
    )


def test_leaderboard_body_carries_ranks() -> None:
    page = LeaderboardPage(
        (RankedInfluencer("inf-9", 3.75, 11), RankedInfluencer("inf-2", 3.0, 12)), None, STATS
    )
    body = render.leaderboard_body(page)
    assert wire(body) == (
        '{"data":[{"influencer_id":"inf-9","value":3.75,"rank":11},'
        '{"influencer_id":"inf-2","value":3,"rank":12}],"next_cursor":null,'
        '"statistics":{"elapsed_ms":1.25,"rows_read":7}}'
    )
    assert render.to_csv(body, render.LEADERBOARD_COLUMNS) == (
        "influencer_id,value,rank\r\ninf-9,3.75,11\r\ninf-2,3,12\r\n"
    )


def test_trending_body_formats_instants_and_tags() -> None:
    row = TrendingRow("post-1", 57, 61.0, T0 + 59 * 60_000_000 + 12_000_000, "=love", ("a", "b"))
    body = render.trending_body(TrendingPage((row,), None, STATS))
    assert wire(body) == (
        '{"data":[{"content_id":"post-1","interaction_count":57,"total_engagement":61,'
        '"latest_interaction":"2026-11-18T00:59:12Z","sample_text":"=love",'
        '"common_tags":["a","b"]}],"next_cursor":null,'
        '"statistics":{"elapsed_ms":1.25,"rows_read":7}}'
    )
    assert render.to_csv(body, render.TRENDING_COLUMNS).splitlines()[1] == (
        "post-1,57,61,2026-11-18T00:59:12Z,'=love,a;b"
    )


def test_user_activity_body_lists_platforms() -> None:
    row = UserRow("fan-77", 9, 9.5, ("instagram", "tiktok"), T0 + 1)
    body = render.user_activity_body(UserActivityPage((row,), "more", STATS))
    assert wire(body) == (
        '{"data":[{"user_id":"fan-77","interaction_count":9,"total_engagement":9.5,'
        '"platforms":["instagram","tiktok"],"last_seen":"2026-11-18T00:00:00.000001Z"}],'
        '"next_cursor":"more","statistics":{"elapsed_ms":1.25,"rows_read":7}}'
    )


def test_emv_body_nests_rates_per_platform() -> None:
    table = EmvRateTable(
        (("instagram", "likes", 0.3), ("instagram", "views", 0.02), ("x", "likes", 0.1)),
        (("instagram", "likes"),),
    )
    assert wire(render.emv_body(table)) == (
        '{"rates":{"instagram":{"likes":0.3,"views":0.02},"x":{"likes":0.1}},'
        '"custom":["instagram.likes"]}'
    )
