"""The query API over real HTTP: hand-computed answers, tenants, errors, CSV, restarts.

One module-wide server (``live``) holds a small scenario whose every number is
computed by hand below: tenants ``acme`` and ``globex`` use the same influencer,
content, campaign and user ids with different numbers. Its events sit on ``DAY``
(three UTC days ago) between 09:30 and 12:55; most queries ask for ``[10:00,
13:00)`` of that day. Tests that add events to it put them where no other test
looks (five or six days before DAY, followers two days after it). A second
server (``lagging``) folds at most once a second, so that what a test ingests
right after ``settle`` is still unfolded when it is queried.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import cluster
from .support import (
    LiveServer,
    ServerFactory,
    ServerProcess,
    cli,
    event,
    new_id,
    recent_ts,
    rfc3339,
    start_server,
    utc_now,
)

FAST = {"decode_workers": 0}
DAY = dt.datetime.combine(utc_now().date(), dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=3)


def at(hour: int, minute: int = 0, second: int = 0, days: int = 0) -> str:
    """An instant of DAY (or ``days`` later) as the API writes it."""
    return rfc3339_s(DAY + dt.timedelta(days=days, hours=hour, minutes=minute, seconds=second))


def rfc3339_s(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def date(days: int = 0) -> str:
    return (DAY + dt.timedelta(days=days)).strftime("%Y-%m-%d")


START, END = at(10), at(13)  # the scenario's range: three whole hours
RANGE = {"start": START, "end": END}
HOURS = [at(10), at(11), at(12)]
SINCE = at(0)
INF = "/v1/influencers/inf-a/metrics"
AGG = "/v1/metrics/aggregate"
TRENDING, USERS, BOARD = "/v1/content/trending", "/v1/users/activity", "/v1/leaderboard"
GROUP_BYS = ("platform", "influencer", "campaign", "content", "day")
TRENDING_HOURS = 100  # reaches back past DAY 00:00 (DAY is 72-96 hours ago)


def ig(**fields: Any) -> dict[str, Any]:
    """An acme/globex event on instagram of influencer inf-a (override anything)."""
    return event(
        **{"influencer_id": "inf-a", "platform": "instagram", "content_id": None, **fields}
    )


def reading(value: float, ts: str, **fields: Any) -> dict[str, Any]:
    """A followers snapshot."""
    return ig(metric="followers", kind="snapshot", value=value, ts=ts, **fields)


def acme_events() -> list[dict[str, Any]]:
    post1 = {"content_id": "post-1", "campaign_id": "camp-1"}
    return [
        ig(
            metric="likes",
            value=5,
            ts=at(10, 5, 10),
            user_id="u1",
            text="first!",
            tags=["a", "b"],
            **post1,
        ),
        ig(
            metric="comments",
            value=2,
            ts=at(10, 5, 40),
            user_id="u2",
            text="nice",
            tags=["b"],
            **post1,
        ),
        ig(
            metric="likes",
            value=3,
            ts=at(10, 20),
            user_id="u1",
            content_id="post-2",
            campaign_id="camp-1",
        ),
        ig(metric="impressions", value=200, ts=at(10, 10), **post1),
        ig(metric="clicks", value=10, ts=at(10, 15), **post1),
        ig(metric="conversions", value=1, ts=at(10, 40), **post1),
        reading(1000, at(9, 30)),
        reading(1120, at(10, 30)),
        reading(1100, at(10, 50)),  # the last reading of the hour counts, not the largest
        reading(500, at(11, 30), platform="tiktok"),  # a second account of inf-a
        ig(metric="shares", value=4, ts=at(12), user_id="u3", content_id="post-1", tags=["c", "d"]),
        reading(1150, at(12, 45)),
        # A counter sent as snapshots: the first reading counts in full, then differences.
        ig(metric="views", kind="snapshot", value=1000, ts=at(12, 50), content_id="post-1"),
        ig(metric="views", kind="snapshot", value=1300, ts=at(12, 55), content_id="post-1"),
        reading(300, at(11, 15), influencer_id="inf-b", platform="youtube"),
        event(
            influencer_id="inf-c",
            platform="tiktok",
            metric="likes",
            value=6,
            ts=at(12, 10),
            content_id="post-3",
            campaign_id="camp-1",
            user_id="u1",
            text="hi",
        ),
        event(
            influencer_id="inf-e",
            platform="youtube",
            metric="likes",
            value=6,
            ts=at(11, 10),
            content_id=None,
            campaign_id="camp-2",
        ),
    ]


def late_like() -> dict[str, Any]:
    """Sent after the rest is folded, into the 10:00 hour and the 10:05 minute."""
    return ig(
        metric="likes",
        value=7,
        ts=at(10, 5, 20),
        user_id="u4",
        text="wow",
        tags=["b", "c"],
        content_id="post-1",
        campaign_id="camp-1",
    )


def globex_events() -> list[dict[str, Any]]:
    post1 = {"content_id": "post-1", "campaign_id": "camp-1"}
    return [
        ig(
            metric="likes",
            value=100,
            ts=at(10, 10),
            user_id="u1",
            text="globex",
            tags=["g"],
            **post1,
        ),
        reading(5000, at(9)),
        ig(metric="impressions", value=1000, ts=at(10, 10), **post1),
        ig(metric="clicks", value=1, ts=at(10, 10), **post1),
        event(
            influencer_id="inf-c",
            platform="tiktok",
            metric="likes",
            value=1,
            ts=at(12, 10),
            content_id="post-3",
            campaign_id="camp-1",
            user_id="u9",
        ),
    ]


def ingest(srv: LiveServer, tenant: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = srv.post_events(srv.keys[tenant].ingest, events)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["rejected"] == []
    return body


def load_scenario(srv: LiveServer) -> None:
    acme = acme_events()
    assert ingest(srv, "acme", acme)["accepted"] == len(acme)
    assert ingest(srv, "globex", globex_events())["accepted"] == 5
    assert srv.app.state.services.rollups.wait_folded()
    # Late, and a duplicate of an event already folded: neither may be lost or counted twice.
    assert ingest(srv, "acme", [late_like(), {**acme[0]}]) == {
        "accepted": 1,
        "duplicates": 1,
        "rejected": [],
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_server(tmp_path_factory.mktemp("queries"), **FAST)
    load_scenario(srv)
    yield srv
    srv.stop()


# -- helpers --------------------------------------------------------------------


def get(
    srv: LiveServer, tenant: str | None, path: str, scope: str = "read", **params: Any
) -> httpx.Response:
    key = None if tenant is None else srv.keys[tenant].secrets[scope]
    with srv.client(key) as client:
        return client.get(path, params=params)


def ok(srv: LiveServer, tenant: str, path: str, **params: Any) -> dict[str, Any]:
    """A 200 answer as JSON, its statistics checked and removed."""
    response = get(srv, tenant, path, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    stats = body.pop("statistics")
    assert set(stats) == {"elapsed_ms", "rows_read"}
    assert stats["elapsed_ms"] >= 0
    assert isinstance(stats["rows_read"], int) and stats["rows_read"] >= 0
    return body


def series(srv: LiveServer, tenant: str, influencer: str = "inf-a", **params: Any) -> Any:
    return ok(srv, tenant, f"/v1/influencers/{influencer}/metrics", **params)


def column(answer: dict[str, Any], metric: str) -> list[Any]:
    return [row[metric] for row in answer["series"]]


def pairs(answer: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(row["key"], row["value"]) for row in answer["data"]]


def aggregate(srv: LiveServer, tenant: str, metric: str, group_by: str, **params: Any) -> Any:
    return ok(srv, tenant, AGG, metric=metric, group_by=group_by, **RANGE | params)


def walk(
    srv: LiveServer, tenant: str, path: str, **params: Any
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """Every page of a list answer, following next_cursor; the pages and the cursors."""
    pages: list[list[dict[str, Any]]] = []
    cursors: list[str] = []
    cursor: str | None = None
    while True:
        answer = ok(srv, tenant, path, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(answer["data"])
        cursor = answer["next_cursor"]
        if cursor is None:
            return pages, cursors
        cursors.append(cursor)
        assert len(pages) < 50, "pagination does not end"


def error(response: httpx.Response, status: int, field: str) -> str:
    """Check an error answer (never a 500) and return its message."""
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == "invalid_input"
    assert body["field"] == field, body
    message: str = body["message"]
    return message


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-12)


# -- the scenario, acme ---------------------------------------------------------

EVERYTHING = (
    "likes,comments,shares,views,followers,engagement,engagement_rate,follower_growth,"
    "follower_growth_pct,ctr,conversion_rate,emv,unique_users"
)


def test_hourly_series_and_totals_of_every_kind_of_metric(live: LiveServer) -> None:
    answer = series(live, "acme", metrics=EVERYTHING, granularity="hour", **RANGE)

    assert {k: v for k, v in answer.items() if k not in {"series", "totals"}} == {
        "influencer_id": "inf-a",
        "start": START,
        "end": END,
        "granularity": "hour",
        "metrics": EVERYTHING.split(","),
    }
    assert [row["ts"] for row in answer["series"]] == HOURS
    # 10:00 holds likes 5 + 3 + the late 7, and the comment; 11:00 is empty; 12:00 the share.
    assert column(answer, "likes") == [15, 0, 0]
    assert column(answer, "comments") == [2, 0, 0]
    assert column(answer, "shares") == [0, 0, 4]
    assert column(answer, "views") == [0, 0, 1300]
    assert column(answer, "engagement") == [17, 0, 4]
    # Followers at each bucket end: the last instagram reading (1100, not 1120), plus
    # tiktok's 500 once it has a reading.
    assert column(answer, "followers") == [1100, 1600, 1650]
    # Followers at the start: instagram's 1000 read before the range, tiktok's first (500).
    assert column(answer, "engagement_rate") == [approx(17 / 15), 0, approx(4 / 15)]
    assert column(answer, "follower_growth") == [100, 0, 50]
    assert column(answer, "follower_growth_pct") == [approx(100 / 15), 0, approx(50 / 15)]
    assert column(answer, "ctr") == [5, None, None]
    assert column(answer, "conversion_rate") == [10, None, None]
    # Default rates: likes .10, comments .50, impressions .005, clicks 1, conversions 10 ...
    assert column(answer, "emv") == [approx(1.5 + 1.0 + 1.0 + 10 + 10), 0, approx(3.2 + 26)]
    assert column(answer, "unique_users") == [3, 0, 1]
    assert answer["totals"] == {
        "likes": 15,
        "comments": 2,
        "shares": 4,
        "views": 1300,
        "followers": 1650,
        "engagement": 21,
        "engagement_rate": approx(1.4),
        "follower_growth": 150,
        "follower_growth_pct": 10,
        "ctr": 5,
        "conversion_rate": 10,
        "emv": approx(52.7),
        "unique_users": 4,
    }


def test_rates_by_views_and_by_reach(live: LiveServer) -> None:
    answer = series(
        live,
        "acme",
        metrics="engagement_rate_by_views,engagement_rate_by_reach",
        granularity="hour",
        **RANGE,
    )
    assert column(answer, "engagement_rate_by_views") == [None, None, approx(4 / 13)]
    assert column(answer, "engagement_rate_by_reach") == [None, None, None]
    assert answer["totals"] == {
        "engagement_rate_by_views": approx(21 / 13),
        "engagement_rate_by_reach": None,
    }


@pytest.mark.parametrize(("minutes", "status"), [(10_000, 200), (10_001, 400)])
def test_the_bucket_limit_is_10000(live: LiveServer, minutes: int, status: int) -> None:
    start = DAY - dt.timedelta(days=10)
    window = {"start": rfc3339_s(start), "end": rfc3339_s(start + dt.timedelta(minutes=minutes))}
    response = get(live, "acme", INF, metrics="likes", granularity="minute", **window)
    if status == 200:
        assert response.status_code == 200
        assert len(response.json()["series"]) == 10_000
    else:
        message = error(response, 400, "granularity")
        assert message.startswith("10001 minute buckets exceed the limit of 10000")


def test_custom_metrics_are_queried_like_built_in_ones(live: LiveServer) -> None:
    with live.client(live.keys["globex"].admin) as client:
        for name, kind in (("members", "gauge"), ("story_views", "counter")):
            created = client.post("/v1/admin/metrics", json={"name": name, "kind": kind})
            assert created.json() == {"name": name, "kind": kind}

    def custom(**fields: Any) -> dict[str, Any]:
        return event(**{"influencer_id": "inf-z", "content_id": None, **fields})

    moment = at(9, days=-6)  # out of every other test's range
    rejected = live.post_events(live.keys["globex"].ingest, [custom(metric="members", ts=moment)])
    assert rejected.status_code == 400
    assert [(r["index"], r["field"]) for r in rejected.json()["rejected"]] == [(0, "kind")]
    ingest(
        live,
        "globex",
        [
            custom(metric="members", kind="snapshot", value=40, ts=moment),
            custom(metric="members", kind="snapshot", value=45, ts=at(9, 30, days=-6)),
            custom(metric="story_views", value=3, ts=moment),
            custom(metric="story_views", value=4, ts=at(10, days=-6)),
        ],
    )

    window = {"start": moment, "end": at(11, days=-6)}
    answer = series(
        live, "globex", "inf-z", metrics="members,story_views", granularity="hour", **window
    )
    assert answer["series"] == [
        {"ts": at(9, days=-6), "members": 45, "story_views": 3},
        {"ts": at(10, days=-6), "members": 45, "story_views": 4},
    ]
    assert answer["totals"] == {"members": 45, "story_views": 7}
    # acme has no such metrics.
    assert "members" in error(get(live, "acme", INF, metrics="members"), 400, "metrics")


def test_default_metrics_and_aliases(live: LiveServer) -> None:
    answer = series(live, "acme", granularity="hour", **RANGE)
    assert answer["metrics"] == ["likes", "comments", "shares"]
    assert answer["totals"] == {"likes": 15, "comments": 2, "shares": 4}

    aliased = series(live, "acme", metrics="Like, reply,likes", granularity="hour", **RANGE)
    assert aliased["metrics"] == ["likes", "comments"]
    assert aliased["totals"] == {"likes": 15, "comments": 2}


def test_minute_series_zero_fills_and_counts_the_late_event_in_its_minute(
    live: LiveServer,
) -> None:
    answer = series(
        live,
        "acme",
        metrics="likes,comments,unique_users",
        granularity="minute",
        start=at(10, 4),
        end=at(10, 8),
    )

    assert answer["granularity"] == "minute"
    assert answer["series"] == [
        {"ts": at(10, 4), "likes": 0, "comments": 0, "unique_users": 0},
        {"ts": at(10, 5), "likes": 12, "comments": 2, "unique_users": 3},
        {"ts": at(10, 6), "likes": 0, "comments": 0, "unique_users": 0},
        {"ts": at(10, 7), "likes": 0, "comments": 0, "unique_users": 0},
    ]
    assert answer["totals"] == {"likes": 12, "comments": 2, "unique_users": 3}


def test_a_range_off_the_bucket_boundaries_counts_only_inside_it(live: LiveServer) -> None:
    # [10:05:30, 10:05:50) holds the comment (10:05:40) but not the likes (10:05:10, :20).
    ragged = series(
        live,
        "acme",
        metrics="likes,comments",
        granularity="minute",
        start=at(10, 5, 30),
        end=at(10, 5, 50),
    )
    assert ragged["start"] == at(10, 5, 30)
    assert ragged["series"] == [{"ts": at(10, 5), "likes": 0, "comments": 2}]

    # [10:30, 12:30) hourly: buckets from the one holding the start; followers at the
    # start include the reading at exactly 10:30 (1120) plus tiktok's first (500).
    half = series(
        live,
        "acme",
        metrics="engagement,followers,follower_growth",
        granularity="hour",
        start=at(10, 30),
        end=at(12, 30),
    )
    assert half["series"] == [
        {"ts": at(10), "engagement": 0, "followers": 1100, "follower_growth": -20},
        {"ts": at(11), "engagement": 0, "followers": 1600, "follower_growth": 0},
        {"ts": at(12), "engagement": 4, "followers": 1600, "follower_growth": 0},
    ]
    assert half["totals"] == {"engagement": 4, "followers": 1600, "follower_growth": -20}


def test_day_granularity_counts_only_the_range_inside_the_day(live: LiveServer) -> None:
    answer = series(live, "acme", metrics="likes,shares,followers", granularity="day", **RANGE)

    assert answer["granularity"] == "day"
    assert answer["series"] == [{"ts": at(0), "likes": 15, "shares": 4, "followers": 1650}]
    assert answer["totals"] == {"likes": 15, "shares": 4, "followers": 1650}


@pytest.mark.parametrize(
    ("start", "end", "grain", "buckets"),
    [
        pytest.param(START, END, "minute", 180, id="3h-minute"),
        pytest.param(at(0), at(0, days=1), "hour", 24, id="1d-hour"),
        pytest.param(at(0, days=-20), at(0, days=1), "day", 21, id="21d-day"),  # 504 hours
    ],
)
def test_auto_granularity_picks_the_finest_with_at_most_500_buckets(
    live: LiveServer, start: str, end: str, grain: str, buckets: int
) -> None:
    answer = series(live, "acme", metrics="likes,shares", start=start, end=end)

    assert answer["granularity"] == grain
    assert len(answer["series"]) == buckets
    nonzero = {
        row["ts"]: (row["likes"], row["shares"])
        for row in answer["series"]
        if row["likes"] or row["shares"]
    }
    expected = {
        "minute": {at(10, 5): (12, 0), at(10, 20): (3, 0), at(12): (0, 4)},
        "hour": {at(10): (15, 0), at(12): (0, 4)},
        "day": {at(0): (15, 4)},
    }[grain]
    assert nonzero == expected
    assert answer["totals"] == {"likes": 15, "shares": 4}


def test_followers_are_null_before_any_reading(live: LiveServer) -> None:
    answer = series(
        live,
        "acme",
        "inf-b",
        metrics="followers,follower_growth,follower_growth_pct,engagement_rate,likes",
        granularity="hour",
        **RANGE,
    )

    assert column(answer, "followers") == [None, 300, 300]
    assert column(answer, "follower_growth") == [0, 0, 0]
    assert column(answer, "follower_growth_pct") == [0, 0, 0]
    assert column(answer, "engagement_rate") == [0, 0, 0]
    assert answer["totals"] == {
        "followers": 300,
        "follower_growth": 0,
        "follower_growth_pct": 0,
        "engagement_rate": 0,
        "likes": 0,
    }

    nobody = series(
        live,
        "acme",
        "nobody",
        metrics="followers,engagement_rate,likes",
        granularity="hour",
        **RANGE,
    )
    assert nobody["series"] == [
        {"ts": ts, "followers": None, "engagement_rate": None, "likes": 0} for ts in HOURS
    ]
    assert nobody["totals"] == {"followers": None, "engagement_rate": None, "likes": 0}


def test_platform_and_campaign_filters_of_a_series(live: LiveServer) -> None:
    tiktok = series(
        live, "acme", metrics="likes,followers", granularity="hour", platform="tt", **RANGE
    )
    assert tiktok["series"] == [
        {"ts": at(10), "likes": 0, "followers": None},
        {"ts": at(11), "likes": 0, "followers": 500},
        {"ts": at(12), "likes": 0, "followers": 500},
    ]

    camp = series(
        live,
        "acme",
        metrics="likes,shares,followers",
        granularity="hour",
        campaign_id="camp-1",
        **RANGE,
    )
    # The share carries no campaign; followers ignore the campaign (inf-a is in it).
    assert camp["totals"] == {"likes": 15, "shares": 0, "followers": 1650}
    # inf-a has no event of camp-2: none of its followers count for it.
    other = series(live, "acme", metrics="likes,followers", campaign_id="camp-2", **RANGE)
    assert other["totals"] == {"likes": 0, "followers": None}


def test_time_parameter_defaults(live: LiveServer) -> None:
    def instant(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text)

    # end alone: the 24 hours before it.
    before_end = series(live, "acme", metrics="likes", end=END)
    assert (before_end["start"], before_end["end"]) == (at(13, days=-1), END)
    assert before_end["granularity"] == "hour"
    assert len(before_end["series"]) == 24
    assert before_end["totals"] == {"likes": 15}

    # start alone runs to the end of the current minute; a period (or nothing, 24h) is
    # made of whole buckets of the series' granularity, ending with the one holding now.
    def ceil(moment: dt.datetime, width: dt.timedelta) -> dt.datetime:
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return moment + (epoch - moment) % width

    minute, hour = dt.timedelta(minutes=1), dt.timedelta(hours=1)
    for params, grain, width, span in (
        ({"start": START}, "hour", minute, None),
        ({"period": "24h"}, "hour", hour, dt.timedelta(hours=24)),
        ({"period": "90m"}, "minute", minute, dt.timedelta(minutes=90)),
        ({"period": "90m", "granularity": "hour"}, "hour", minute, dt.timedelta(minutes=90)),
        ({}, "hour", hour, dt.timedelta(hours=24)),
    ):
        before = utc_now()
        answer = series(live, "acme", metrics="likes", **params)
        after = utc_now()
        end = instant(answer["end"])
        assert answer["granularity"] == grain, params
        assert end in {ceil(before, width), ceil(after, width)}, params
        start = instant(START) if span is None else end - span
        assert answer["start"] == rfc3339_s(start), params
        assert answer["totals"] == {"likes": 15 if span is None else 0}, params

    # The aggregate's default is the last 24 hours too, the leaderboard's the last 7 days.
    assert ok(live, "acme", AGG, metric="likes", group_by="platform")["data"] == []
    assert ok(live, "acme", BOARD, metric="likes")["data"] == [
        {"influencer_id": "inf-a", "value": 15, "rank": 1},
        {"influencer_id": "inf-c", "value": 6, "rank": 2},
        {"influencer_id": "inf-e", "value": 6, "rank": 3},
    ]


def test_campaign_series_and_per_influencer_breakdown(live: LiveServer) -> None:
    answer = ok(
        live,
        "acme",
        "/v1/campaigns/camp-1/metrics",
        metrics="likes,comments,followers",
        granularity="hour",
        **RANGE,
    )

    assert answer["campaign_id"] == "camp-1"
    assert answer["series"] == [
        {"ts": at(10), "likes": 15, "comments": 2, "followers": 1100},
        {"ts": at(11), "likes": 0, "comments": 0, "followers": 1600},
        {"ts": at(12), "likes": 6, "comments": 0, "followers": 1650},
    ]
    assert answer["totals"] == {"likes": 21, "comments": 2, "followers": 1650}
    assert answer["influencers"] == [
        {"influencer_id": "inf-a", "totals": {"likes": 15, "comments": 2, "followers": 1650}},
        {"influencer_id": "inf-c", "totals": {"likes": 6, "comments": 0, "followers": None}},
    ]


def test_emv_rates_defaults_overrides_and_null_restoring_the_default(live: LiveServer) -> None:
    admin = live.keys["acme"].admin
    defaults = {
        "impressions": 0.005,
        "reach": 0.005,
        "views": 0.02,
        "likes": 0.10,
        "comments": 0.50,
        "shares": 0.80,
        "saves": 0.60,
        "clicks": 1.00,
        "conversions": 10.00,
    }
    with live.client(admin) as client:
        listed = client.get("/v1/admin/emv").json()
    assert listed["custom"] == []
    assert set(listed["rates"]) == {
        "instagram", "youtube", "tiktok", "x", "facebook", "linkedin", "twitch", "app", "web"
    }  # fmt: skip
    assert all(rates == defaults for rates in listed["rates"].values())

    def emv(tenant: str) -> Any:
        return series(live, tenant, metrics="emv", granularity="hour", **RANGE)["totals"]["emv"]

    assert emv("acme") == approx(52.7)
    try:
        with live.client(admin) as client:
            put = client.put(
                "/v1/admin/emv", json={"rates": {"instagram": {"like": 1.0, "views": 0}}}
            )
        assert put.status_code == 200, put.text
        assert put.json()["custom"] == ["instagram.likes", "instagram.views"]
        assert put.json()["rates"]["instagram"] == {**defaults, "likes": 1.0, "views": 0.0}
        assert put.json()["rates"]["tiktok"] == defaults
        # likes 15 x 1.0 instead of x 0.10, views 1300 x 0 instead of x 0.02.
        assert emv("acme") == approx(52.7 - 1.5 + 15 - 26)
        # The other tenant keeps the defaults.
        assert emv("globex") == approx(16)
        with live.client(live.keys["globex"].admin) as client:
            assert client.get("/v1/admin/emv").json() == listed

        with live.client(admin) as client:
            put = client.put("/v1/admin/emv", json={"rates": {"instagram": {"likes": None}}})
        assert put.json()["custom"] == ["instagram.views"]
        assert emv("acme") == approx(52.7 - 26)
    finally:
        with live.client(admin) as client:
            put = client.put(
                "/v1/admin/emv", json={"rates": {"instagram": {"likes": None, "views": None}}}
            )
        assert put.status_code == 200
    assert put.json() == listed
    assert emv("acme") == approx(52.7)


# -- aggregate, leaderboard, trending, users -----------------------------------


@pytest.mark.parametrize(
    ("metric", "group_by", "expected"),
    [
        ("likes", "platform", [("instagram", 15), ("tiktok", 6), ("youtube", 6)]),
        ("likes", "influencer", [("inf-a", 15), ("inf-c", 6), ("inf-e", 6)]),
        ("likes", "campaign", [("camp-1", 21), ("camp-2", 6)]),
        ("likes", "content", [("post-1", 12), ("post-3", 6), ("post-2", 3)]),
        ("engagement", "content", [("post-1", 18), ("post-3", 6), ("post-2", 3)]),
        ("likes", "day", [(date(), 27)]),
        ("followers", "platform", [("instagram", 1150), ("tiktok", 500), ("youtube", 300)]),
        ("followers", "influencer", [("inf-a", 1650), ("inf-b", 300)]),
        ("followers", "campaign", [("camp-1", 1650)]),
        ("unique_users", "platform", [("instagram", 4), ("tiktok", 1)]),
        (
            "engagement_rate",
            "influencer",
            [("inf-a", approx(1.4)), ("inf-b", 0), ("inf-c", None), ("inf-e", None)],
        ),
    ],
)
def test_aggregate_every_group_by(
    live: LiveServer, metric: str, group_by: str, expected: list[tuple[str, Any]]
) -> None:
    answer = aggregate(live, "acme", metric, group_by)
    assert pairs(answer) == expected
    assert answer["next_cursor"] is None


def test_aggregate_by_day_lists_every_day_and_sorts(live: LiveServer) -> None:
    two_days = {"start": at(0), "end": at(0, days=2)}
    assert pairs(aggregate(live, "acme", "likes", "day", sort="key", **two_days)) == [
        (date(), 27),
        (date(1), 0),
    ]
    assert pairs(aggregate(live, "acme", "likes", "day", sort="-key", **two_days)) == [
        (date(1), 0),
        (date(), 27),
    ]
    assert pairs(aggregate(live, "acme", "likes", "influencer", sort="value")) == [
        ("inf-c", 6),
        ("inf-e", 6),
        ("inf-a", 15),
    ]
    assert pairs(aggregate(live, "acme", "likes", "influencer", sort="-key")) == [
        ("inf-e", 6),
        ("inf-c", 6),
        ("inf-a", 15),
    ]
    assert pairs(aggregate(live, "acme", "likes", "content", platform="instagram")) == [
        ("post-1", 12),
        ("post-2", 3),
    ]
    assert pairs(aggregate(live, "acme", "likes", "influencer", campaign_id="camp-2")) == [
        ("inf-e", 6)
    ]


@pytest.mark.parametrize(
    ("metric", "group_by", "sort"),
    [
        ("likes", "influencer", "-value"),
        ("engagement_rate", "influencer", "-value"),
        ("engagement_rate", "influencer", "value"),
        ("likes", "day", "-value"),
        ("engagement", "content", "key"),
    ],
)
def test_aggregate_pagination_returns_every_row_once_in_a_stable_order(
    live: LiveServer, metric: str, group_by: str, sort: str
) -> None:
    params = {"metric": metric, "group_by": group_by, "sort": sort, "start": at(0, days=-1)}
    params["end"] = at(0, days=2)
    whole = ok(live, "acme", AGG, **params)["data"]
    assert len(whole) >= 3

    pages, cursors = walk(live, "acme", AGG, limit=1, **params)
    assert [len(page) for page in pages] == [1] * len(whole)
    assert [row for page in pages for row in page] == whole
    assert len(set(cursors)) == len(cursors)
    # The same cursor gives the same page again.
    again = ok(live, "acme", AGG, limit=1, cursor=cursors[0], **params)
    assert again["data"] == pages[1]


def test_leaderboard_ranks_continue_across_pages(live: LiveServer) -> None:
    pages, _ = walk(live, "acme", BOARD, limit=2, **RANGE)
    assert pages == [
        [
            {"influencer_id": "inf-a", "value": 21, "rank": 1},
            {"influencer_id": "inf-c", "value": 6, "rank": 2},
        ],
        [{"influencer_id": "inf-e", "value": 6, "rank": 3}],
    ]

    pages, _ = walk(live, "acme", BOARD, metric="engagement_rate", limit=3, **RANGE)
    assert pages == [
        [
            {"influencer_id": "inf-a", "value": approx(1.4), "rank": 1},
            {"influencer_id": "inf-b", "value": 0, "rank": 2},
            {"influencer_id": "inf-c", "value": None, "rank": 3},
        ],
        [{"influencer_id": "inf-e", "value": None, "rank": 4}],
    ]

    youtube = ok(live, "acme", BOARD, metric="likes", platform="youtube", **RANGE)
    assert youtube["data"] == [{"influencer_id": "inf-e", "value": 6, "rank": 1}]
    # The default period is the last 7 days, which holds the whole scenario.
    assert ok(live, "acme", BOARD)["data"] == [
        {"influencer_id": "inf-a", "value": 21, "rank": 1},
        {"influencer_id": "inf-c", "value": 6, "rank": 2},
        {"influencer_id": "inf-e", "value": 6, "rank": 3},
    ]


POST_1 = {
    "content_id": "post-1",
    "interaction_count": 4,  # 2 likes, the comment, the share; views are not engagement
    "total_engagement": 18,
    "latest_interaction": at(12),
    "sample_text": "nice",  # the newest engagement event that carries a text
    "common_tags": ["b", "c", "a"],  # b 3, c 2, then a and d once: a by name
}
POST_3 = {
    "content_id": "post-3",
    "interaction_count": 1,
    "total_engagement": 6,
    "latest_interaction": at(12, 10),
    "sample_text": "hi",
    "common_tags": [],
}
POST_2 = {
    "content_id": "post-2",
    "interaction_count": 1,
    "total_engagement": 3,
    "latest_interaction": at(10, 20),
    "sample_text": None,
    "common_tags": [],
}


def test_trending_fields_and_min_interactions(live: LiveServer) -> None:
    path = TRENDING
    answer = ok(live, "acme", path, hours_back=TRENDING_HOURS, min_interactions=1)
    assert answer == {"data": [POST_1, POST_3, POST_2], "next_cursor": None}

    assert ok(live, "acme", path, hours_back=TRENDING_HOURS, min_interactions=2)["data"] == [POST_1]
    assert ok(live, "acme", path, hours_back=TRENDING_HOURS, min_interactions=5)["data"] == []
    # The default asks for 10 interactions.
    assert ok(live, "acme", path, hours_back=TRENDING_HOURS)["data"] == []
    tiktok = ok(
        live, "acme", path, hours_back=TRENDING_HOURS, min_interactions=0, platform="tiktok"
    )
    assert tiktok["data"] == [POST_3]
    # 24 hours back does not reach three days ago.
    assert ok(live, "acme", path, min_interactions=0)["data"] == []

    pages, _ = walk(live, "acme", path, hours_back=TRENDING_HOURS, min_interactions=1, limit=2)
    assert pages == [[POST_1, POST_3], [POST_2]]


U1 = {
    "user_id": "u1",
    "interaction_count": 3,
    "total_engagement": 14,
    "platforms": ["instagram", "tiktok"],
    "last_seen": at(12, 10),
}
U4 = {
    "user_id": "u4",
    "interaction_count": 1,
    "total_engagement": 7,
    "platforms": ["instagram"],
    "last_seen": at(10, 5, 20),
}
U3 = {
    "user_id": "u3",
    "interaction_count": 1,
    "total_engagement": 4,
    "platforms": ["instagram"],
    "last_seen": at(12),
}
U2 = {
    "user_id": "u2",
    "interaction_count": 1,
    "total_engagement": 2,
    "platforms": ["instagram"],
    "last_seen": at(10, 5, 40),
}


def test_users_activity_with_min_engagement_and_pages(live: LiveServer) -> None:
    path = USERS
    assert ok(live, "acme", path, since=SINCE) == {"data": [U1, U4, U3, U2], "next_cursor": None}
    assert ok(live, "acme", path, since=SINCE, min_engagement=4)["data"] == [U1, U4, U3]
    assert ok(live, "acme", path, since=SINCE, min_engagement=14.5)["data"] == []
    # Since 10:05:30 only the events after it count.
    later = ok(live, "acme", path, since=at(10, 5, 30))["data"]
    assert [(u["user_id"], u["total_engagement"]) for u in later] == [
        ("u1", 9),
        ("u3", 4),
        ("u2", 2),
    ]
    # The default is the last 24 hours.
    assert ok(live, "acme", path)["data"] == []

    pages, _ = walk(live, "acme", path, since=SINCE, limit=2)
    assert pages == [[U1, U4], [U3, U2]]
    pages, _ = walk(live, "acme", path, since=SINCE, limit=3, min_engagement=3)
    assert pages == [[U1, U4, U3]]


def test_ties_between_readings_and_texts_and_an_older_counter_reading(live: LiveServer) -> None:
    # Influencer inf-t on x. Its counters five days before DAY and its followers two days
    # after it: out of every other test's range (a reading before a range counts in it).
    def on_x(**fields: Any) -> dict[str, Any]:
        return event(
            **{"influencer_id": "inf-t", "platform": "x", "content_id": "post-t", **fields}
        )

    moment, later = at(8, days=-5), at(8, days=2)
    ingest(
        live,
        "acme",
        [
            on_x(metric="likes", ts=moment, text="apple", tags=["t"]),
            on_x(metric="comments", ts=moment, text="banana", tags=["t"]),
            on_x(metric="views", kind="snapshot", value=50, ts=at(8, 2, days=-5)),
            on_x(metric="views", kind="snapshot", value=80, ts=at(8, 3, days=-5)),
            # At the same time readings are ordered by value: 200 is the last one.
            on_x(metric="followers", kind="snapshot", value=200, ts=later, content_id=None),
            on_x(metric="followers", kind="snapshot", value=100, ts=later, content_id=None),
        ],
    )
    # Older than the last reading seen: counts 0.
    ingest(live, "acme", [on_x(metric="views", kind="snapshot", value=70, ts=at(8, 1, days=-5))])
    hours_back = int((utc_now() - dt.datetime.fromisoformat(moment)).total_seconds() // 3600) + 2

    def answers() -> tuple[Any, ...]:
        four_minutes = {"granularity": "minute", "start": moment, "end": at(8, 4, days=-5)}
        counters = series(live, "acme", "inf-t", metrics="likes,views", **four_minutes)
        two_minutes = {"granularity": "minute", "start": later, "end": at(8, 2, days=2)}
        gauge = series(live, "acme", "inf-t", metrics="followers", **two_minutes)
        trending = ok(live, "acme", TRENDING, hours_back=hours_back, min_interactions=2)
        item = [c for c in trending["data"] if c["content_id"] == "post-t"]
        return counters, gauge, item

    counters, gauge, item = raw = answers()
    assert item == [
        {
            "content_id": "post-t",
            "interaction_count": 2,
            "total_engagement": 2,
            "latest_interaction": moment,
            "sample_text": "banana",  # same time: the greatest text
            "common_tags": ["t"],
        }
    ]
    assert column(counters, "likes") == [1, 0, 0, 0]
    assert column(counters, "views") == [0, 0, 50, 30]
    assert counters["totals"] == {"likes": 1, "views": 80}
    assert column(gauge, "followers") == [200, 200]
    assert gauge["totals"] == {"followers": 200}
    # The same from the rollups.
    assert live.app.state.services.rollups.wait_folded()
    assert answers() == raw


# -- tenants --------------------------------------------------------------------


def test_globex_sees_only_its_own_numbers_on_every_route(live: LiveServer) -> None:
    inf = series(live, "globex", metrics=EVERYTHING, granularity="hour", **RANGE)
    assert column(inf, "likes") == [100, 0, 0]
    assert column(inf, "followers") == [5000, 5000, 5000]
    assert inf["totals"] == {
        "likes": 100,
        "comments": 0,
        "shares": 0,
        "views": 0,
        "followers": 5000,
        "engagement": 100,
        "engagement_rate": 2,
        "follower_growth": 0,
        "follower_growth_pct": 0,
        "ctr": approx(0.1),
        "conversion_rate": 0,
        "emv": approx(16),
        "unique_users": 1,
    }
    assert series(live, "globex", "inf-b", metrics="followers", **RANGE)["totals"] == {
        "followers": None
    }

    camp = ok(live, "globex", "/v1/campaigns/camp-1/metrics", granularity="hour", **RANGE)
    assert column(camp, "likes") == [100, 0, 1]
    assert camp["influencers"] == [
        {"influencer_id": "inf-a", "totals": {"likes": 100, "comments": 0, "shares": 0}},
        {"influencer_id": "inf-c", "totals": {"likes": 1, "comments": 0, "shares": 0}},
    ]
    assert ok(live, "globex", "/v1/campaigns/camp-2/metrics", **RANGE)["influencers"] == []

    assert pairs(aggregate(live, "globex", "likes", "platform")) == [
        ("instagram", 100),
        ("tiktok", 1),
    ]
    assert pairs(aggregate(live, "globex", "likes", "influencer")) == [
        ("inf-a", 100),
        ("inf-c", 1),
    ]
    assert pairs(aggregate(live, "globex", "likes", "campaign")) == [("camp-1", 101)]
    assert pairs(aggregate(live, "globex", "likes", "content")) == [("post-1", 100), ("post-3", 1)]
    assert pairs(aggregate(live, "globex", "likes", "day")) == [(date(), 101)]
    assert pairs(aggregate(live, "globex", "followers", "influencer")) == [("inf-a", 5000)]

    trending = ok(live, "globex", TRENDING, hours_back=TRENDING_HOURS, min_interactions=1)
    assert trending["data"] == [
        {
            "content_id": "post-1",
            "interaction_count": 1,
            "total_engagement": 100,
            "latest_interaction": at(10, 10),
            "sample_text": "globex",
            "common_tags": ["g"],
        },
        {
            "content_id": "post-3",
            "interaction_count": 1,
            "total_engagement": 1,
            "latest_interaction": at(12, 10),
            "sample_text": None,
            "common_tags": [],
        },
    ]
    users = ok(live, "globex", USERS, since=SINCE)["data"]
    assert users == [
        {
            "user_id": "u1",
            "interaction_count": 1,
            "total_engagement": 100,
            "platforms": ["instagram"],
            "last_seen": at(10, 10),
        },
        {
            "user_id": "u9",
            "interaction_count": 1,
            "total_engagement": 1,
            "platforms": ["tiktok"],
            "last_seen": at(12, 10),
        },
    ]
    assert ok(live, "globex", BOARD, **RANGE)["data"] == [
        {"influencer_id": "inf-a", "value": 100, "rank": 1},
        {"influencer_id": "inf-c", "value": 1, "rank": 2},
    ]


# (path, params) of every paginated query, with a first page holding one row.
PAGED = [
    pytest.param(
        AGG,
        {"metric": "likes", "group_by": "platform", **RANGE},
        id="aggregate-platform",
    ),
    pytest.param(
        AGG,
        {"metric": "likes", "group_by": "influencer", **RANGE},
        id="aggregate-influencer",
    ),
    pytest.param(
        AGG,
        {"metric": "likes", "group_by": "campaign", "start": at(0, days=-1), "end": at(0, days=1)},
        id="aggregate-campaign",
    ),
    pytest.param(
        AGG,
        {"metric": "likes", "group_by": "content", **RANGE},
        id="aggregate-content",
    ),
    pytest.param(
        AGG,
        {"metric": "likes", "group_by": "day", "start": at(0), "end": at(0, days=2)},
        id="aggregate-day",
    ),
    pytest.param(TRENDING, {"hours_back": TRENDING_HOURS, "min_interactions": 1}, id="trending"),
    pytest.param(USERS, {"since": SINCE}, id="users"),
    pytest.param(BOARD, RANGE, id="leaderboard"),
]


@pytest.mark.parametrize(("path", "params"), PAGED)
def test_a_cursor_of_one_tenant_is_rejected_for_the_other(
    live: LiveServer, path: str, params: dict[str, Any]
) -> None:
    first = ok(live, "acme", path, limit=1, **params)
    cursor = first["next_cursor"]
    assert cursor is not None
    # It works for acme ...
    second = ok(live, "acme", path, limit=1, cursor=cursor, **params)
    assert second["data"] and second["data"] != first["data"]
    # ... and is refused to globex with the very same parameters.
    theirs = get(live, "globex", path, limit=1, cursor=cursor, **params)
    assert "cursor" in error(theirs, 400, "cursor")
    # globex's own first page is its own.
    assert ok(live, "globex", path, limit=1, **params)["data"] != first["data"]


READ_ROUTES = [
    ("/v1/influencers/inf-a/metrics", {}),
    ("/v1/campaigns/camp-1/metrics", {}),
    *[(AGG, {"metric": "likes", "group_by": g}) for g in GROUP_BYS],
    (TRENDING, {}),
    (USERS, {}),
    (BOARD, {}),
]


@pytest.mark.parametrize(("path", "params"), READ_ROUTES)
def test_read_routes_need_a_key_with_the_read_scope(
    live: LiveServer, path: str, params: dict[str, Any]
) -> None:
    anonymous = get(live, None, path, **params)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")

    wrong = get(live, "acme", path, scope="ingest", **params)
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "forbidden"
    assert "read" in wrong.json()["error"]["message"]

    assert get(live, "acme", path, **params).status_code == 200


def test_emv_admin_routes_need_the_admin_scope(live: LiveServer) -> None:
    body = {"rates": {"instagram": {"likes": 5.0}}}
    for scope in ("read", "ingest"):
        with live.client(live.keys["acme"].secrets[scope]) as client:
            for response in (client.get("/v1/admin/emv"), client.put("/v1/admin/emv", json=body)):
                assert response.status_code == 403
                assert response.json()["error"]["code"] == "forbidden"
                assert "admin" in response.json()["error"]["message"]
    with live.client() as client:
        assert client.get("/v1/admin/emv").status_code == 401
        assert client.put("/v1/admin/emv", json=body).status_code == 401
    with live.client(live.keys["acme"].admin) as client:
        assert client.get("/v1/admin/emv").json()["custom"] == []


# -- errors ---------------------------------------------------------------------

OLD = rfc3339_s(utc_now() - dt.timedelta(days=401))
BY = {"metric": "likes", "group_by": "platform"}

# (id, path, params, status, field, a fragment of the message)
# fmt: off
BAD_PARAMETERS = [
    ("unknown-metric", INF, {"metrics": "likes,frobs"}, 400, "metrics", "frobs"),
    ("no-metric", INF, {"metrics": " , "}, 400, "metrics", "allowed"),
    ("campaign-unknown-metric", "/v1/campaigns/c/metrics", {"metrics": "x"}, 400, "metrics", "'x'"),
    ("end-before-start", INF, {"start": END, "end": START}, 400, "end", "after"),
    ("end-equals-start", INF, {"start": START, "end": START}, 400, "end", "after"),
    ("start-past-retention", INF, {"start": OLD}, 400, "start", "retention of 400 days"),
    ("bad-start", INF, {"start": "yesterday"}, 400, "start", "RFC 3339"),
    ("naive-start", INF, {"start": "2026-01-01T00:00:00"}, 400, "start", "offset"),
    ("bad-end", INF, {"end": "soon"}, 400, "end", "RFC 3339"),
    ("bad-period", INF, {"period": "banana"}, 400, "period", "banana"),
    ("zero-period", INF, {"period": "0h"}, 400, "period", "0h"),
    ("period-past-retention", INF, {"period": "401d"}, 400, "period", "retention"),
    ("period-and-start", INF, {"period": "1h", "start": START}, 400, "period", "not both"),
    ("period-and-end", INF, {"period": "1h", "end": END}, 400, "period", "not both"),
    ("too-many-buckets", INF, {"granularity": "minute", "period": "30d"}, 400, "granularity",
     "43200 minute buckets exceed the limit of 10000"),
    ("bad-granularity", INF, {"granularity": "week"}, 400, "granularity", "week"),
    ("unknown-platform", INF, {"platform": "myspace"}, 400, "platform", "myspace"),
    ("bad-format", INF, {"format": "xml"}, 400, "format", "csv"),
    ("bad-cursor", AGG, {**BY, "cursor": "garbage"}, 400, "cursor", "cursor"),
    ("bad-cursor-base64", AGG, {**BY, "cursor": "!!"}, 400, "cursor", "cursor"),
    ("bad-group-by", AGG, {"metric": "likes", "group_by": "country"}, 400, "group_by", "country"),
    ("bad-sort", AGG, {**BY, "sort": "-likes"}, 400, "sort", "-likes"),
    ("aggregate-limit-0", AGG, {**BY, "limit": 0}, 422, "limit", "limit"),
    ("aggregate-limit-1001", AGG, {**BY, "limit": 1001}, 422, "limit", "limit"),
    ("aggregate-platform", AGG, {**BY, "platform": "myspace"}, 400, "platform", "myspace"),
    ("aggregate-period-and-start", AGG, {**BY, "period": "1h", "start": START}, 400, "period",
     "not both"),
    ("aggregate-no-metric", AGG, {"group_by": "platform"}, 422, "metric", "metric"),
    ("aggregate-two-metrics", AGG, {**BY, "metric": "likes,comments"}, 400, "metric", "one"),
    ("followers-by-content", AGG, {"metric": "followers", "group_by": "content"}, 400, "metric",
     "content"),
    ("rate-by-content", AGG, {"metric": "engagement_rate", "group_by": "content"}, 400, "metric",
     "content"),
    ("trending-limit-0", TRENDING, {"limit": 0}, 422, "limit", "limit"),
    ("hours-back-0", TRENDING, {"hours_back": 0}, 422, "hours_back", "hours_back"),
    ("hours-back-past-retention", TRENDING, {"hours_back": 10_000}, 400, "hours_back", "9600"),
    ("trending-platform", TRENDING, {"platform": "myspace"}, 400, "platform", "myspace"),
    ("trending-cursor", TRENDING, {"cursor": "garbage"}, 400, "cursor", "cursor"),
    ("users-limit-0", USERS, {"limit": 0}, 422, "limit", "limit"),
    ("users-bad-since", USERS, {"since": "yesterday"}, 400, "since", "RFC 3339"),
    ("users-since-past-retention", USERS, {"since": OLD}, 400, "since", "retention"),
    ("users-negative-min", USERS, {"min_engagement": -1}, 422, "min_engagement", "min_engagement"),
    ("users-cursor", USERS, {"cursor": "garbage"}, 400, "cursor", "cursor"),
    ("leaderboard-limit-0", BOARD, {"limit": 0}, 422, "limit", "limit"),
    ("leaderboard-platform", BOARD, {"platform": "myspace"}, 400, "platform", "myspace"),
    ("leaderboard-bad-period", BOARD, {"period": "7x"}, 400, "period", "7x"),
    ("leaderboard-end-before-start", BOARD, {"start": END, "end": START}, 400, "end", "after"),
    ("leaderboard-cursor", BOARD, {"cursor": "garbage"}, 400, "cursor", "cursor"),
]
# fmt: on


@pytest.mark.parametrize(
    ("path", "params", "status", "field", "fragment"),
    [pytest.param(*case, id=name) for name, *case in BAD_PARAMETERS],
)
def test_invalid_parameters_are_named(
    live: LiveServer, path: str, params: dict[str, Any], status: int, field: str, fragment: str
) -> None:
    message = error(get(live, "acme", path, **params), status, field)
    assert fragment in message


def test_unknown_metric_message_lists_the_allowed_metrics(live: LiveServer) -> None:
    message = error(get(live, "acme", INF, metrics="frobs"), 400, "metrics")

    assert message.startswith("unknown metric 'frobs'; allowed: ")
    assert message.split("allowed: ", 1)[1].split(", ") == [
        "clicks", "comments", "conversions", "followers", "impressions", "likes", "reach",
        "revenue", "saves", "shares", "views", "votes", "engagement", "engagement_rate",
        "engagement_rate_by_views", "engagement_rate_by_reach", "ctr", "conversion_rate",
        "follower_growth", "follower_growth_pct", "emv", "unique_users",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param(AGG, {"metric": "frobs", "group_by": "platform"}, id="aggregate"),
        pytest.param(BOARD, {"metric": "frobs"}, id="leaderboard"),
    ],
)
def test_unknown_metric_names_the_metric_parameter(
    live: LiveServer, path: str, params: dict[str, Any]
) -> None:
    message = error(get(live, "acme", path, **params), 400, "metric")
    assert "frobs" in message


def test_cursor_of_other_parameters_is_rejected(live: LiveServer) -> None:
    first = aggregate(live, "acme", "likes", "influencer", limit=1)
    cursor = first["next_cursor"]
    for other in (
        {"group_by": "platform"},
        {"sort": "key"},
        {"metric": "shares"},
        {"end": at(12)},
        {"platform": "instagram"},
    ):
        params = {"metric": "likes", "group_by": "influencer", **RANGE, **other}
        response = get(live, "acme", AGG, limit=1, cursor=cursor, **params)
        assert "cursor" in error(response, 400, "cursor")
    # A different limit is the same query: the cursor still applies.
    assert pairs(aggregate(live, "acme", "likes", "influencer", limit=5, cursor=cursor)) == [
        ("inf-c", 6),
        ("inf-e", 6),
    ]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"rates": {"myspace": {"likes": 1}}}, id="platform"),
        pytest.param({"rates": {"instagram": {"followers": 1}}}, id="gauge"),
        pytest.param({"rates": {"instagram": {"frobs": 1}}}, id="unknown-metric"),
        pytest.param({"rates": {"instagram": {"likes": -1}}}, id="negative"),
    ],
)
def test_emv_put_names_the_bad_rate(live: LiveServer, body: dict[str, Any]) -> None:
    platform, rates = next(iter(body["rates"].items()))
    expected = (
        f"rates.{platform}" if platform == "myspace" else f"rates.{platform}.{next(iter(rates))}"
    )
    with live.client(live.keys["acme"].admin) as client:
        error(client.put("/v1/admin/emv", json=body), 400, expected)
        assert client.get("/v1/admin/emv").json()["custom"] == []
    with live.client(live.keys["acme"].admin) as client:
        response = client.put("/v1/admin/emv", json={"rates": {"instagram": {"likes": "many"}}})
    assert error(response, 422, "rates.instagram.likes")


def test_a_delta_of_followers_is_rejected_naming_kind(live: LiveServer) -> None:
    bad = ig(metric="followers", value=10, ts=at(11), event_id=new_id())
    alias = ig(metric="subscribers", kind="delta", value=10, ts=at(11))
    response = live.post_events(live.keys["acme"].ingest, [bad, alias])

    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "all_events_rejected"
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(0, "kind"), (1, "kind")]
    assert "snapshot" in body["rejected"][0]["error"]
    assert series(live, "acme", metrics="followers", **RANGE)["totals"] == {"followers": 1650}


# -- CSV ------------------------------------------------------------------------


def cell(value: Any) -> str:
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return "" if value is None else str(value)


def csv_rows(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert float(response.headers["x-elapsed-ms"]) >= 0
    assert int(response.headers["x-rows-read"]) >= 0
    assert "statistics" not in response.text
    return list(csv.reader(io.StringIO(response.text)))


@pytest.mark.parametrize("how", ["accept", "format"])
def test_csv_of_a_series(live: LiveServer, how: str) -> None:
    params = {"metrics": "likes,followers,ctr,emv,engagement_rate", "granularity": "hour", **RANGE}
    json_answer = series(live, "acme", **params)
    key = live.keys["acme"].read
    with live.client(key) as client:
        if how == "accept":
            response = client.get(INF, params=params, headers={"Accept": "text/csv"})
        else:
            response = client.get(INF, params={**params, "format": "csv"})

    rows = csv_rows(response)
    assert 'filename="influencer-inf-a.csv"' in response.headers["content-disposition"]
    assert int(response.headers["x-rows-read"]) > 0
    metrics = ["likes", "followers", "ctr", "emv", "engagement_rate"]
    assert rows[0] == ["ts", *metrics]
    assert rows[1:] == [
        [row["ts"], *(cell(row[m]) for m in metrics)] for row in json_answer["series"]
    ]
    assert rows[2] == [at(11), "0", "1600", "", "0", "0"]


@pytest.mark.parametrize("how", ["accept", "format"])
def test_csv_of_a_list(live: LiveServer, how: str) -> None:
    params = {"hours_back": TRENDING_HOURS, "min_interactions": 1}
    path = TRENDING
    json_answer = ok(live, "acme", path, **params)
    with live.client(live.keys["acme"].read) as client:
        if how == "accept":
            response = client.get(path, params=params, headers={"Accept": "text/csv"})
        else:
            response = client.get(path, params={**params, "format": "csv"})

    rows = csv_rows(response)
    header = list(POST_1)
    assert rows[0] == header
    assert rows[1:] == [[cell(item[c]) for c in header] for item in json_answer["data"]]
    assert rows[1] == ["post-1", "4", "18", at(12), "nice", "b;c;a"]
    assert rows[3][4:] == ["", ""]

    users = get(live, "acme", USERS, since=SINCE, format="csv")
    assert csv_rows(users)[1] == ["u1", "3", "14", "instagram;tiktok", at(12, 10)]
    board = get(live, "acme", BOARD, metric="engagement_rate", format="csv", **RANGE)
    board_rows = csv_rows(board)[1:]
    assert [(r[0], r[2]) for r in board_rows] == [
        ("inf-a", "1"),
        ("inf-b", "2"),
        ("inf-c", "3"),
        ("inf-e", "4"),
    ]
    assert float(board_rows[0][1]) == approx(1.4)
    assert [r[1] for r in board_rows[1:]] == ["0", "", ""]
    agg = get(live, "acme", AGG, metric="likes", group_by="platform", format="csv", **RANGE)
    assert csv_rows(agg) == [
        ["key", "value"],
        ["instagram", "15"],
        ["tiktok", "6"],
        ["youtube", "6"],
    ]
    # ?format=json wins over Accept.
    with live.client(live.keys["acme"].read) as client:
        forced = client.get(
            path, params={**params, "format": "json"}, headers={"Accept": "text/csv"}
        )
    assert forced.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "params", "header"),
    [
        pytest.param(TRENDING, {"min_interactions": 1000}, list(POST_1), id="trending"),
        pytest.param(AGG, {**BY, "period": "1h"}, ["key", "value"], id="aggregate"),
        pytest.param(USERS, {"min_engagement": 1e9}, list(U1), id="users"),
        pytest.param(BOARD, {"period": "1h"}, ["influencer_id", "value", "rank"], id="leaderboard"),
    ],
)
def test_csv_of_an_empty_list_keeps_its_header(
    live: LiveServer, path: str, params: dict[str, Any], header: list[str]
) -> None:
    assert ok(live, "acme", path, **params)["data"] == []
    assert csv_rows(get(live, "acme", path, format="csv", **params)) == [header]


# -- freshness, restarts, rebuilds ------------------------------------------------


LAG = 1.0  # seconds the fold thread sleeps after each fold


@pytest.fixture(scope="module")
def lagging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose events stay unfolded for about LAG seconds after ``settle``."""
    srv = start_server(tmp_path_factory.mktemp("lagging"), rollup_fold_interval=LAG, **FAST)
    yield srv
    srv.stop()


def settle(srv: LiveServer) -> None:
    """Fold everything; the fold thread then sleeps LAG seconds, so what comes next is raw."""
    assert srv.app.state.services.rollups.wait_folded()


def test_freshly_ingested_events_are_answered_at_once(lagging: LiveServer) -> None:
    srv = lagging
    who = new_id("fresh")  # influencer, content item and user, all new
    ingest(srv, "globex", [event(influencer_id="warm-up", ts=recent_ts(5))])
    settle(srv)
    total = 0
    for step in (1, 2, 3):
        total += step
        fresh = event(
            influencer_id=who,
            metric="likes",
            value=step,
            user_id=who,
            content_id=who,
            ts=recent_ts(0.5),
        )
        ingest(srv, "acme", [fresh])
        # No waiting: the answers right after the acknowledgement include the event.
        assert series(srv, "acme", who, metrics="likes", period="1h")["totals"] == {"likes": total}
        trending = ok(srv, "acme", TRENDING, hours_back=2, min_interactions=1)["data"]
        assert [
            (c["total_engagement"], c["interaction_count"])
            for c in trending
            if c["content_id"] == who
        ] == [(total, step)]
        users = ok(srv, "acme", USERS)["data"]
        assert [
            (u["total_engagement"], u["interaction_count"]) for u in users if u["user_id"] == who
        ] == [(total, step)]
        # "2h": a period of whole hours ends with the current one (the event may be in
        # the hour before).
        board = ok(srv, "acme", BOARD, period="2h", metric="likes", limit=1000)["data"]
        assert [row["value"] for row in board if row["influencer_id"] == who] == [total]
        by_content = ok(srv, "acme", AGG, metric="likes", group_by="content", period="2h")
        assert dict(pairs(by_content))[who] == total
    assert [u for u in ok(srv, "globex", USERS)["data"] if u["user_id"] == who] == []


def _short_series(srv: LiveServer, who: str, ts: dt.datetime, metric: str) -> Any:
    ten = dt.timedelta(seconds=10)
    window = {"start": rfc3339(ts - ten), "end": rfc3339(ts + ten)}
    answer = series(srv, "acme", who, metrics=metric, granularity="minute", **window)
    return answer["totals"][metric]


def _content_under_an_hour(srv: LiveServer, who: str, ts: dt.datetime, metric: str) -> Any:
    ten = dt.timedelta(minutes=10)
    window = {"start": rfc3339(ts - ten), "end": rfc3339(ts + ten)}
    answer = ok(srv, "acme", AGG, metric=metric, group_by="content", **window)
    return dict(pairs(answer)).get(who)


def _trending_two_hours(srv: LiveServer, who: str, ts: dt.datetime, metric: str) -> Any:
    # Two hours: an event 30 s old may sit in the hour before the current one.
    answer = ok(srv, "acme", TRENDING, hours_back=2, min_interactions=1)
    return {c["content_id"]: c["total_engagement"] for c in answer["data"]}.get(who)


@pytest.mark.parametrize(
    ("query", "metric", "kind"),
    [
        pytest.param(_short_series, "likes", "delta", id="series-within-a-minute"),
        pytest.param(_short_series, "followers", "snapshot", id="followers-within-a-minute"),
        pytest.param(_content_under_an_hour, "likes", "delta", id="aggregate-by-content"),
        pytest.param(_trending_two_hours, "likes", "delta", id="trending-2h"),
    ],
)
def test_unfolded_events_count_in_ranges_without_whole_rollup_buckets(
    lagging: LiveServer,
    query: Callable[[LiveServer, str, dt.datetime, str], Any],
    metric: str,
    kind: str,
) -> None:
    who = new_id("fresh")  # the influencer and its content item
    ts = utc_now() - dt.timedelta(seconds=30)
    settle(lagging)
    one = event(influencer_id=who, content_id=who, metric=metric, kind=kind, ts=rfc3339(ts))
    ingest(lagging, "acme", [one])

    assert query(lagging, who, ts, metric) == 1


def snapshot_of_answers(srv: LiveServer) -> dict[str, Any]:
    """Every kind of answer, both tenants, statistics removed."""
    out: dict[str, Any] = {}
    for tenant in ("acme", "globex"):
        calls: dict[str, tuple[str, dict[str, Any]]] = {
            "series-hour": (INF, {"metrics": EVERYTHING, "granularity": "hour", **RANGE}),
            "series-minute": (INF, {"metrics": EVERYTHING, "granularity": "minute", **RANGE}),
            "series-day": (INF, {"metrics": EVERYTHING, "granularity": "day", **RANGE}),
            "campaign": ("/v1/campaigns/camp-1/metrics", {"metrics": EVERYTHING, **RANGE}),
            "trending": (
                TRENDING,
                {"hours_back": TRENDING_HOURS, "min_interactions": 1},
            ),
            "users": (USERS, {"since": SINCE}),
            "leaderboard": (BOARD, RANGE),
            **{
                f"aggregate-{g}": (AGG, {"metric": "engagement", "group_by": g, **RANGE})
                for g in GROUP_BYS
            },
        }
        for name, (path, params) in calls.items():
            out[f"{tenant}/{name}"] = ok(srv, tenant, path, **params)
    return out


def test_answers_survive_folding_a_restart_and_a_rebuild(make_server: ServerFactory) -> None:
    first = make_server(rollup_fold_interval=LAG, **FAST)
    load_scenario(first)  # the late like and the duplicate arrive just after a fold
    before = snapshot_of_answers(first)  # so the late like is read raw
    assert before["acme/series-hour"]["totals"]["likes"] == 15
    assert before["acme/series-minute"]["series"][5]["likes"] == 12
    assert before["globex/series-hour"]["totals"]["likes"] == 100
    assert before["acme/trending"]["data"] == [POST_1, POST_3, POST_2]
    assert pairs(before["acme/aggregate-content"]) == [("post-1", 18), ("post-3", 6), ("post-2", 3)]
    assert pairs(before["acme/aggregate-day"]) == [(date(), 33)]  # engagement
    # Read from the rollups once folded: the same answers.
    settle(first)
    assert snapshot_of_answers(first) == before
    data, keys = first.data, first.keys
    first.stop()

    second = make_server(data=data, keys=keys, **FAST)
    assert snapshot_of_answers(second) == before
    second.stop()

    done = cli("rebuild", "--data", str(data))
    folded = re.search(r"rebuilt the rollups from ([\d,]+) events", done.stdout)
    assert folded, done.stdout
    # Every stored event of both tenants: acme's, the late like (not the duplicate), globex's.
    assert int(folded[1].replace(",", "")) == len(acme_events()) + 1 + len(globex_events())

    third = make_server(data=data, keys=keys, **FAST)
    assert snapshot_of_answers(third) == before


@pytest.mark.skipif(
    bool(cluster.POSTGRES),
    reason="one process holds the embedded file; PostgreSQL rebuilds online",
)
def test_rebuild_refuses_while_a_server_holds_the_data(
    tmp_path: Path, spawn: Callable[[Path], ServerProcess]
) -> None:
    data = tmp_path / "data"
    server = spawn(data)

    refused = cli("rebuild", "--data", str(data), check=False)

    assert refused.returncode == 2
    assert "rebuilt" not in refused.stdout
    assert refused.stderr.startswith("error: cannot open the store ")
    assert "lock" in refused.stderr
    assert str(data.resolve() / "hypemeter.duckdb") in refused.stderr
    assert "Traceback" not in refused.stderr
    # The server is unharmed.
    assert httpx.get(f"{server.url}/readyz", timeout=30).json()["status"] == "ready"
