"""Tenant-wide views over real HTTP: ``GET /v1/metrics/series``, the ``influencer_id``
filter of ``GET /v1/metrics/aggregate`` and ``GET /v1/ingestion/health``.

The series and aggregate tests share one module-wide server holding a generated
scenario: counters of five influencers on three platforms and two campaigns (some
events in none), spread over ``DAY`` (three UTC days ago) from 09:00 to 14:00, and
the same ids under ``globex`` with other values; the next day, follower readings of
three accounts. Every expected number is a plain sum, computed in the test, over the
events that were ingested. The health tests
start their own server: its counts are per process and per tenant, so a fresh one
makes every count exact.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .support import LiveServer, ServerFactory, event, new_id, rfc3339, start_server, utc_now
from .webhooks_support import Webhooks, encode, meta_signed, now_s, unique

FAST = {"decode_workers": 0}
DAY = dt.datetime.combine(utc_now().date(), dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=3)
SERIES, AGG, HEALTH = "/v1/metrics/series", "/v1/metrics/aggregate", "/v1/ingestion/health"
INFLUENCERS = tuple(f"inf-{n}" for n in range(1, 6))
PLATFORMS = ("instagram", "tiktok", "youtube")
CAMPAIGNS = ("camp-a", "camp-b", None)
COUNTERS = ("likes", "comments", "shares", "saves", "views")
ENGAGEMENT = ("likes", "comments", "shares", "saves")


def at(hour: int, minute: int = 0) -> dt.datetime:
    return DAY + dt.timedelta(hours=hour, minutes=minute)


def stamp(moment: dt.datetime) -> str:
    """An instant as the query API writes it (no fraction)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


START, END = at(10), at(13)
RANGE = {"start": stamp(START), "end": stamp(END)}


# -- the scenario -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One counter event as ingested, kept to compute expectations from."""

    influencer: str
    platform: str
    campaign: str | None
    metric: str
    value: float
    ts: dt.datetime

    def body(self) -> dict[str, Any]:
        return event(
            influencer_id=self.influencer,
            platform=self.platform,
            campaign_id=self.campaign,
            content_id=f"{self.influencer}-{self.platform}-post",
            metric=self.metric,
            value=self.value,
            ts=rfc3339(self.ts),
        )


def generate(seed: int, count: int) -> list[Sent]:
    rng = random.Random(seed)
    sent = [
        Sent(
            influencer=rng.choice(INFLUENCERS),
            platform=rng.choice(PLATFORMS),
            campaign=rng.choice(CAMPAIGNS),
            metric=rng.choice(COUNTERS),
            # Whole numbers and halves: every sum is exact in binary floating point.
            value=rng.randint(1, 40) / rng.choice((1, 2)),
            ts=at(9) + dt.timedelta(microseconds=rng.randrange(5 * 3600 * 1_000_000)),
        )
        for _ in range(count)
    ]
    # The edges: the first and last instants of the range count, those just outside do not.
    edges = [START, END - dt.timedelta(microseconds=1), END, START - dt.timedelta(microseconds=1)]
    sent += [Sent("inf-1", "tiktok", "camp-a", "likes", 1000, moment) for moment in edges]
    return sent


ACME = generate(1, 400)
GLOBEX = generate(2, 150)

# Follower readings (and one like) the day after DAY, 10:00 to 13:00: three accounts of
# acme, one read before the range only, one first read inside it; one of globex.
NEXT = DAY + dt.timedelta(days=1)


def next_day(hour: int, minute: int = 0) -> dt.datetime:
    return NEXT + dt.timedelta(hours=hour, minutes=minute)


READINGS = [
    ("inf-1", "instagram", 1000, next_day(9, 30)),
    ("inf-1", "instagram", 1100, next_day(10, 20)),
    ("inf-1", "instagram", 1050, next_day(10, 50)),  # the hour's last reading, not its largest
    ("inf-2", "tiktok", 300, next_day(11, 15)),
    ("inf-1", "instagram", 1200, next_day(12, 10)),
    ("inf-3", "youtube", 700, next_day(8)),
]
NEXT_LIKE = Sent("inf-1", "instagram", None, "likes", 30, next_day(10, 5))


def reading(influencer: str, platform: str, value: float, moment: dt.datetime) -> dict[str, Any]:
    return event(
        influencer_id=influencer,
        platform=platform,
        content_id=None,
        metric="followers",
        kind="snapshot",
        value=value,
        ts=rfc3339(moment),
    )


def post(srv: LiveServer, tenant: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = srv.post_events(srv.keys[tenant].ingest, events)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body == {"accepted": len(events), "duplicates": 0, "rejected": []}
    return body


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_server(tmp_path_factory.mktemp("tenant-views"), **FAST)
    half = len(ACME) // 2
    post(srv, "acme", [s.body() for s in ACME[:half]])
    post(srv, "globex", [s.body() for s in GLOBEX])
    assert srv.app.state.services.rollups.wait_folded()
    post(srv, "acme", [s.body() for s in ACME[half:]])  # some folded, some not yet
    post(srv, "acme", [reading(*r) for r in READINGS] + [NEXT_LIKE.body()])
    post(srv, "globex", [reading("inf-1", "instagram", 99_999, next_day(10, 30))])
    yield srv
    srv.stop()


# -- plain expectations -------------------------------------------------------------------


def value_of(metric: str, sums: dict[str, float]) -> float:
    if metric == "engagement":
        return sum(sums[m] for m in ENGAGEMENT)
    return sums[metric]


def selected(
    sent: Iterable[Sent],
    start: dt.datetime,
    end: dt.datetime,
    *,
    platform: str | None = None,
    campaign: str | None = None,
    influencer: str | None = None,
) -> list[Sent]:
    return [
        s
        for s in sent
        if start <= s.ts < end
        and (platform is None or s.platform == platform)
        and (campaign is None or s.campaign == campaign)
        and (influencer is None or s.influencer == influencer)
    ]


def expected_series(
    sent: Iterable[Sent],
    metrics: tuple[str, ...],
    start: dt.datetime,
    end: dt.datetime,
    step: dt.timedelta,
    **filters: str,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per-bucket values and totals, summed plainly."""
    buckets: dict[dt.datetime, dict[str, float]] = {}
    moment = start
    while moment < end:
        buckets[moment] = defaultdict(float)
        moment += step
    totals: dict[str, float] = defaultdict(float)
    for s in selected(sent, start, end, **filters):
        bucket = start + (s.ts - start) // step * step
        buckets[bucket][s.metric] += s.value
        totals[s.metric] += s.value
    rows = [
        {"ts": stamp(b), **{m: value_of(m, sums) for m in metrics}} for b, sums in buckets.items()
    ]
    return rows, {m: value_of(m, totals) for m in metrics}


def expected_groups(
    sent: Iterable[Sent], metric: str, group_by: str, **filters: str
) -> dict[str | None, float]:
    groups: dict[str | None, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for s in selected(sent, START, END, **filters):
        key = {"platform": s.platform, "campaign": s.campaign, "influencer": s.influencer}
        groups[key[group_by]][s.metric] += s.value
    return {k: value_of(metric, sums) for k, sums in groups.items() if value_of(metric, sums)}


# -- HTTP helpers -----------------------------------------------------------------------------


def get(srv: LiveServer, key: str | None, path: str, **params: Any) -> httpx.Response:
    with srv.client(key) as client:
        return client.get(path, params=params)


def ok(srv: LiveServer, tenant: str, path: str, **params: Any) -> dict[str, Any]:
    response = get(srv, srv.keys[tenant].read, path, **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    stats = body.pop("statistics", None)
    if path != HEALTH:
        assert set(stats) == {"elapsed_ms", "rows_read"}
    return body


def csv_rows(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


# -- 1. GET /v1/metrics/series ---------------------------------------------------------------

METRICS = ("likes", "comments", "shares", "saves", "views", "engagement")
HOUR = dt.timedelta(hours=1)


def test_tenant_series_equals_plain_sums_of_every_event(views: LiveServer) -> None:
    answer = ok(views, "acme", SERIES, metrics=",".join(METRICS), granularity="hour", **RANGE)
    rows, totals = expected_series(ACME, METRICS, START, END, HOUR)
    assert answer == {
        "start": RANGE["start"],
        "end": RANGE["end"],
        "granularity": "hour",
        "metrics": list(METRICS),
        "series": rows,
        "totals": totals,
    }
    # The scenario is not degenerate: every influencer and the range's edges are in it.
    assert {s.influencer for s in selected(ACME, START, END)} == set(INFLUENCERS)
    assert totals["likes"] >= 2000  # both edge likes inside the range


def test_tenant_series_by_minute_and_by_day(views: LiveServer) -> None:
    start, end = at(10), at(10, 30)
    minute = ok(
        views,
        "acme",
        SERIES,
        metrics="likes,views",
        granularity="minute",
        start=stamp(start),
        end=stamp(end),
    )
    rows, totals = expected_series(ACME, ("likes", "views"), start, end, dt.timedelta(minutes=1))
    assert (minute["series"], minute["totals"]) == (rows, totals)
    assert len(rows) == 30

    # A period of whole days: DAY's bucket holds the whole day, edges included.
    week = ok(views, "acme", SERIES, metrics="likes,engagement", granularity="day", period="7d")
    assert week["granularity"] == "day"
    by_day = {row["ts"]: row for row in week["series"]}
    assert len(by_day) == 7
    _, whole_day = expected_series(
        ACME, ("likes", "engagement"), DAY, DAY + dt.timedelta(days=1), dt.timedelta(days=1)
    )
    assert by_day[stamp(DAY)] == {"ts": stamp(DAY), **whole_day}
    assert by_day[stamp(NEXT)] == {"ts": stamp(NEXT), "likes": 30, "engagement": 30}
    # Nothing else in the last seven days.
    assert week["totals"] == {m: whole_day[m] + 30 for m in ("likes", "engagement")}
    assert sum(row["likes"] for row in week["series"]) == whole_day["likes"] + 30


@pytest.mark.parametrize("platform", PLATFORMS)
def test_tenant_series_of_one_platform(views: LiveServer, platform: str) -> None:
    answer = ok(
        views,
        "acme",
        SERIES,
        metrics="likes,engagement",
        granularity="hour",
        platform=platform,
        **RANGE,
    )
    rows, totals = expected_series(
        ACME, ("likes", "engagement"), START, END, HOUR, platform=platform
    )
    assert (answer["series"], answer["totals"]) == (rows, totals)
    assert totals["engagement"] > 0


@pytest.mark.parametrize("campaign", ["camp-a", "camp-b"])
def test_tenant_series_of_one_campaign_equals_the_campaign_route(
    views: LiveServer, campaign: str
) -> None:
    params = {"metrics": "likes,comments,engagement", "granularity": "hour", **RANGE}
    answer = ok(views, "acme", SERIES, campaign_id=campaign, **params)
    rows, totals = expected_series(
        ACME, ("likes", "comments", "engagement"), START, END, HOUR, campaign=campaign
    )
    assert (answer["series"], answer["totals"]) == (rows, totals)
    campaign_route = ok(views, "acme", f"/v1/campaigns/{campaign}/metrics", **params)
    assert (campaign_route["series"], campaign_route["totals"]) == (rows, totals)

    both = ok(views, "acme", SERIES, campaign_id=campaign, platform="tiktok", **params)
    rows, totals = expected_series(
        ACME,
        ("likes", "comments", "engagement"),
        START,
        END,
        HOUR,
        campaign=campaign,
        platform="tiktok",
    )
    assert (both["series"], both["totals"]) == (rows, totals)


def test_tenant_series_is_the_sum_of_the_influencer_series(views: LiveServer) -> None:
    params = {"metrics": "likes,shares", "granularity": "hour", **RANGE}
    tenant = ok(views, "acme", SERIES, **params)
    each = [ok(views, "acme", f"/v1/influencers/{inf}/metrics", **params) for inf in INFLUENCERS]
    for name in ("likes", "shares"):
        assert tenant["totals"][name] == sum(answer["totals"][name] for answer in each)
        for i, row in enumerate(tenant["series"]):
            assert row[name] == sum(answer["series"][i][name] for answer in each)


def test_other_tenants_events_never_count(views: LiveServer) -> None:
    acme = ok(views, "acme", SERIES, metrics=",".join(METRICS), granularity="hour", **RANGE)
    globex = ok(views, "globex", SERIES, metrics=",".join(METRICS), granularity="hour", **RANGE)
    assert (acme["series"], acme["totals"]) == expected_series(ACME, METRICS, START, END, HOUR)
    assert (globex["series"], globex["totals"]) == expected_series(
        GLOBEX, METRICS, START, END, HOUR
    )
    assert acme["totals"] != globex["totals"]
    # A tenant with no events at all: zeros, every bucket there.
    empty = ok(
        views,
        "acme",
        SERIES,
        metrics="likes",
        granularity="hour",
        **{
            "start": stamp(at(10) - dt.timedelta(days=1)),
            "end": stamp(at(13) - dt.timedelta(days=1)),
        },
    )
    assert [row["likes"] for row in empty["series"]] == [0, 0, 0]
    assert empty["totals"] == {"likes": 0}


def test_tenant_followers_add_up_every_account(views: LiveServer) -> None:
    window = {"start": stamp(next_day(10)), "end": stamp(next_day(13))}
    metrics = "followers,follower_growth,engagement_rate,likes"
    answer = ok(views, "acme", SERIES, metrics=metrics, granularity="hour", **window)
    # At each hour's end, every account's last reading so far: 1050 + 700, then tiktok's
    # first 300, then instagram's 1200.
    assert [row["followers"] for row in answer["series"]] == [1750, 2050, 2200]
    # Growth from each account's reading at the start (tiktok's first one, inside).
    assert [row["follower_growth"] for row in answer["series"]] == [50, 0, 150]
    # The 30 likes over the followers at the range's start (as for an influencer: each
    # account's reading then, or its first one inside): 1000 + 300 + 700.
    assert [row["engagement_rate"] for row in answer["series"]] == [
        pytest.approx(30 / 2000 * 100, rel=1e-12),
        0,
        0,
    ]
    assert answer["totals"] == {
        "followers": 2200,
        "follower_growth": 200,
        "engagement_rate": pytest.approx(30 / 2000 * 100, rel=1e-12),
        "likes": 30,
    }
    # The same as the influencers' series added up.
    params = {"metrics": "followers,follower_growth", "granularity": "hour", **window}
    each = [ok(views, "acme", f"/v1/influencers/{inf}/metrics", **params) for inf in INFLUENCERS]
    for name in ("followers", "follower_growth"):  # None: an influencer without readings
        assert answer["totals"][name] == sum(a["totals"][name] or 0 for a in each)
        assert [row[name] for row in answer["series"]] == [
            sum(a["series"][i][name] or 0 for a in each) for i in range(3)
        ]
    tiktok = ok(
        views, "acme", SERIES, metrics="followers", granularity="hour", platform="tiktok", **window
    )
    assert [row["followers"] for row in tiktok["series"]] == [None, 300, 300]  # none read yet
    globex = ok(views, "globex", SERIES, metrics="followers", granularity="hour", **window)
    assert [row["followers"] for row in globex["series"]] == [99_999] * 3


@pytest.mark.parametrize("how", ["format", "accept"])
def test_tenant_series_as_csv(views: LiveServer, how: str) -> None:
    params = {"metrics": "likes,engagement", "granularity": "hour", "platform": "youtube", **RANGE}
    with views.client(views.keys["acme"].read) as client:
        if how == "format":
            response = client.get(SERIES, params={**params, "format": "csv"})
        else:
            response = client.get(SERIES, params=params, headers={"Accept": "text/csv"})
    rows = csv_rows(response)
    assert 'filename="tenant.csv"' in response.headers["content-disposition"]
    assert rows[0] == ["ts", "likes", "engagement"]
    expected, _ = expected_series(
        ACME, ("likes", "engagement"), START, END, HOUR, platform="youtube"
    )
    assert [[r[0], float(r[1]), float(r[2])] for r in rows[1:]] == [
        [e["ts"], e["likes"], e["engagement"]] for e in expected
    ]
    assert int(response.headers["X-Rows-Read"]) >= 0


def test_tenant_series_refusals(views: LiveServer) -> None:
    keys = views.keys["acme"]
    assert get(views, None, SERIES, metrics="likes", **RANGE).status_code == 401
    assert get(views, keys.ingest, SERIES, metrics="likes", **RANGE).status_code == 403
    for params, field in (
        ({"metrics": "nope"}, "metrics"),
        ({"platform": "myspace"}, "platform"),
        ({"granularity": "fortnight"}, "granularity"),
        ({"format": "xml"}, "format"),
    ):
        response = get(views, keys.read, SERIES, **{"metrics": "likes", **RANGE, **params})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field
    # The influencer route's extra field is not part of this answer.
    answer = ok(views, "acme", SERIES, metrics="likes", granularity="hour", **RANGE)
    assert "influencer_id" not in answer


# -- 2. GET /v1/metrics/aggregate?influencer_id= ----------------------------------------------


def pairs(answer: dict[str, Any]) -> dict[str | None, float]:
    return {row["key"]: row["value"] for row in answer["data"]}


@pytest.mark.parametrize("influencer", ["inf-1", "inf-3"])
@pytest.mark.parametrize("metric", ["likes", "engagement"])
def test_aggregate_of_one_influencer_by_platform(
    views: LiveServer, influencer: str, metric: str
) -> None:
    answer = ok(
        views, "acme", AGG, metric=metric, group_by="platform", influencer_id=influencer, **RANGE
    )
    expected = expected_groups(ACME, metric, "platform", influencer=influencer)
    assert pairs(answer) == expected
    assert len(expected) == 3
    values = [row["value"] for row in answer["data"]]
    assert values == sorted(values, reverse=True)
    # Not the tenant's: the same query without the filter gives larger sums.
    everyone = pairs(ok(views, "acme", AGG, metric=metric, group_by="platform", **RANGE))
    assert everyone == expected_groups(ACME, metric, "platform")
    assert all(everyone[p] > expected[p] for p in expected)


def test_aggregate_influencer_filter_with_other_filters_and_groupings(views: LiveServer) -> None:
    params = {"metric": "likes", "influencer_id": "inf-2", **RANGE}
    by_campaign = pairs(ok(views, "acme", AGG, group_by="campaign", **params))
    expected = expected_groups(ACME, "likes", "campaign", influencer="inf-2")
    expected.pop(None, None)  # events without a campaign belong to no campaign group
    assert by_campaign == expected
    on_tiktok = pairs(ok(views, "acme", AGG, group_by="platform", platform="tiktok", **params))
    assert on_tiktok == expected_groups(
        ACME, "likes", "platform", influencer="inf-2", platform="tiktok"
    )
    by_influencer = pairs(ok(views, "acme", AGG, group_by="influencer", **params))
    assert by_influencer == expected_groups(ACME, "likes", "influencer", influencer="inf-2")
    assert list(by_influencer) == ["inf-2"]
    with_campaign = pairs(
        ok(views, "acme", AGG, group_by="platform", campaign_id="camp-b", **params)
    )
    assert with_campaign == expected_groups(
        ACME, "likes", "platform", influencer="inf-2", campaign="camp-b"
    )


def test_aggregate_influencer_filter_stays_in_the_tenant(views: LiveServer) -> None:
    acme = pairs(
        ok(views, "acme", AGG, metric="likes", group_by="platform", influencer_id="inf-4", **RANGE)
    )
    globex = pairs(
        ok(
            views,
            "globex",
            AGG,
            metric="likes",
            group_by="platform",
            influencer_id="inf-4",
            **RANGE,
        )
    )
    assert acme == expected_groups(ACME, "likes", "platform", influencer="inf-4")
    assert globex == expected_groups(GLOBEX, "likes", "platform", influencer="inf-4")
    unknown = ok(
        views, "acme", AGG, metric="likes", group_by="platform", influencer_id="nobody", **RANGE
    )
    assert unknown["data"] == []
    assert unknown["next_cursor"] is None


# -- 3. GET /v1/ingestion/health -----------------------------------------------------------

MINUTE_US = 60_000_000


def health(srv: LiveServer, tenant: str) -> dict[str, Any]:
    return ok(srv, tenant, HEALTH)


def minute_of(moment: dt.datetime) -> str:
    return rfc3339(moment.replace(second=0, microsecond=0))


def check_shape(answer: dict[str, Any], before: dt.datetime, after: dt.datetime) -> None:
    """60 consecutive minutes, oldest first, ending at the current one; totals their sums."""
    assert set(answer) == {
        "window_minutes",
        "minutes",
        "totals",
        "recent_rejections",
        "dead_letters",
        "connectors",
    }
    assert answer["window_minutes"] == 60
    minutes = answer["minutes"]
    assert len(minutes) == 60
    assert all(set(m) == {"ts", "accepted", "duplicates", "rejected"} for m in minutes)
    starts = [dt.datetime.fromisoformat(m["ts"]) for m in minutes]
    assert [b - a for a, b in itertools.pairwise(starts)] == [dt.timedelta(minutes=1)] * 59
    assert minutes[-1]["ts"] in {minute_of(before), minute_of(after)}
    assert answer["totals"] == {
        name: sum(m[name] for m in minutes) for name in ("accepted", "duplicates", "rejected")
    }


def watched(srv: LiveServer, tenant: str) -> dict[str, Any]:
    before = utc_now()
    answer = health(srv, tenant)
    check_shape(answer, before, utc_now())
    return answer


def test_health_counts_accepted_duplicates_and_rejected_exactly(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    keys = srv.keys["acme"]
    fresh = watched(srv, "acme")
    assert fresh["totals"] == {"accepted": 0, "duplicates": 0, "rejected": 0}
    assert fresh["recent_rejections"] == []
    assert fresh["dead_letters"] == {"open": [], "more": False}
    assert fresh["connectors"] == []

    posted = utc_now()
    good = [event(influencer_id=new_id("inf")) for _ in range(7)]
    bad_metric = event(metric="nope")
    no_ts = event(ts=None)
    reply = srv.post_events(keys.ingest, [*good, {**good[2]}, bad_metric, no_ts])
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == 7
    assert reply.json()["duplicates"] == 1
    answer = watched(srv, "acme")
    assert answer["totals"] == {"accepted": 7, "duplicates": 1, "rejected": 2}
    rejections = answer["recent_rejections"]
    assert sorted((r["scope"], r["index"], r["field"]) for r in rejections) == [
        ("event", 8, "metric"),
        ("event", 9, "ts"),
    ]
    by_field = {r["field"]: r for r in rejections}
    assert "nope" in by_field["metric"]["error"]
    assert by_field["ts"]["error"] == "ts is required (RFC 3339 with an offset)"
    for rejection in rejections:
        assert set(rejection) == {"at", "scope", "index", "field", "error"}
        assert posted <= dt.datetime.fromisoformat(rejection["at"]) <= utc_now()

    # A second batch of duplicates only, then one the API answers 400 for every event.
    again = srv.post_events(keys.ingest, good[:3])
    assert again.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    refused = srv.post_events(keys.ingest, [event(value="many"), event(platform="myspace")])
    assert refused.status_code == 400, refused.text
    answer = watched(srv, "acme")
    assert answer["totals"] == {"accepted": 7, "duplicates": 4, "rejected": 4}
    newest = answer["recent_rejections"]
    assert len(newest) == 4
    assert {(r["index"], r["field"]) for r in newest[:2]} == {(0, "value"), (1, "platform")}
    assert newest[2:] == rejections  # older ones after, unchanged
    ats = [r["at"] for r in newest]
    assert ats == sorted(ats, reverse=True)

    # Per minute: the counts sit in the minutes the batches were posted in.
    moved = [m for m in answer["minutes"] if m["accepted"] or m["duplicates"] or m["rejected"]]
    assert moved
    assert all(minute_of(posted) <= m["ts"] <= minute_of(utc_now()) for m in moved)

    # The other tenant saw nothing move.
    globex = watched(srv, "globex")
    assert globex["totals"] == {"accepted": 0, "duplicates": 0, "rejected": 0}
    assert globex["recent_rejections"] == []


def test_a_body_that_cannot_be_read_is_a_request_rejection(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    ingest_key = srv.keys["acme"].ingest
    with srv.client(ingest_key) as client:
        broken = client.post(
            "/v1/events",
            content=b'[{"metric": "likes",',
            headers={"Content-Type": "application/json"},
        )
        empty = client.post("/v1/events", json=[])
    assert broken.status_code == 400, broken.text
    assert empty.status_code == 400, empty.text
    answer = watched(srv, "acme")
    assert answer["totals"] == {"accepted": 0, "duplicates": 0, "rejected": 0}
    assert [
        (r["scope"], r["index"], r["field"], r["error"]) for r in answer["recent_rejections"]
    ] == [
        ("request", None, empty.json()["error"]["field"], empty.json()["error"]["message"]),
        ("request", None, broken.json()["error"]["field"], broken.json()["error"]["message"]),
    ]
    assert broken.json()["error"]["field"] == "body"
    assert watched(srv, "globex")["recent_rejections"] == []


def test_a_batch_over_the_event_limit_is_a_request_rejection(make_server: ServerFactory) -> None:
    srv = make_server(max_events_per_request=3, **FAST)
    over = srv.post_events(srv.keys["acme"].ingest, [event() for _ in range(4)])
    assert over.status_code == 413, over.text
    answer = watched(srv, "acme")
    assert answer["totals"] == {"accepted": 0, "duplicates": 0, "rejected": 0}
    (rejection,) = answer["recent_rejections"]
    assert (rejection["scope"], rejection["index"]) == ("request", None)
    assert rejection["error"] == over.json()["error"]["message"]


def test_a_body_over_the_byte_limit_is_a_request_rejection(make_server: ServerFactory) -> None:
    srv = make_server(max_body_bytes=1024, **FAST)
    over = srv.post_events(srv.keys["acme"].ingest, [event() for _ in range(20)])
    assert over.status_code == 413, over.text
    answer = watched(srv, "acme")
    assert [(r["scope"], r["error"]) for r in answer["recent_rejections"]] == [
        ("request", over.json()["error"]["message"])
    ]


def test_a_body_of_an_unknown_type_is_a_request_rejection(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    with srv.client(srv.keys["acme"].ingest) as client:
        refused = client.post("/v1/events", content=b"a,b", headers={"Content-Type": "text/csv"})
    assert refused.status_code == 415, refused.text
    answer = watched(srv, "acme")
    assert [(r["scope"], r["error"]) for r in answer["recent_rejections"]] == [
        ("request", refused.json()["error"]["message"])
    ]


def test_health_needs_the_read_scope(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    keys = srv.keys["acme"]
    assert get(srv, None, HEALTH).status_code == 401
    forbidden = get(srv, keys.ingest, HEALTH)
    assert forbidden.status_code == 403, forbidden.text
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert get(srv, "hm_000000000000_" + "x" * 43, HEALTH).status_code == 401


def comments(account: str, *comment_ids: str) -> bytes:
    changes = [
        {"field": "comments", "value": {"id": c, "text": "nice", "media": {"id": "m1"}}}
        for c in comment_ids
    ]
    return encode(
        {"object": "instagram", "entry": [{"id": account, "time": now_s(), "changes": changes}]}
    )


def test_health_lists_connectors_without_secrets_and_open_dead_letters(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    with Webhooks(srv, "acme") as acme:
        connector = acme.connector("instagram")
        quiet = acme.connector("youtube")
        # A delivery for an account nobody registered: a dead letter.
        stray = unique("1784")
        body = comments(stray, unique("c"))
        assert (
            acme.deliver(connector, body, meta_signed(connector.secret(), body)).status_code == 200
        )
        # A delivery for a registered account: its events count as accepted.
        known = unique("1784")
        acme.influencer("instagram", known)
        body = comments(known, unique("c"), unique("c"))
        assert (
            acme.deliver(connector, body, meta_signed(connector.secret(), body)).status_code == 200
        )

        response = get(srv, srv.keys["acme"].read, HEALTH)
        answer = watched(srv, "acme")
        listed = {c["id"]: c for c in acme.connectors()}
        letters = acme.dead_letters(connector, state="open")

    for secret in [*connector.secrets.values(), *quiet.secrets.values()]:
        assert secret not in response.text
    assert answer["totals"]["accepted"] == 2
    assert sorted(c["id"] for c in answer["connectors"]) == sorted([connector.id, quiet.id])
    for shown in answer["connectors"]:
        assert set(shown) == {"id", "platform", "disabled", "health", "polling"}
        full = listed[shown["id"]]
        # A read key sees the admin's view without what the delivery held (*_detail).
        health = {k: v for k, v in full["health"].items() if k != "last_error_detail"}
        assert shown == {k: full[k] for k in shown} | {"health": health}
    assert {c["id"]: c["platform"] for c in answer["connectors"]} == {
        connector.id: "instagram",
        quiet.id: "youtube",
    }

    assert len(letters) == 1
    (letter,) = letters
    assert answer["dead_letters"]["more"] is False
    assert answer["dead_letters"]["open"] == [
        {
            "id": letter["id"],
            "connector_id": connector.id,
            "platform": "instagram",
            "received_at": rfc3339(
                dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
                + dt.timedelta(microseconds=letter["received_us"])
            ),
            "reasons": letter["reasons"],
        }
    ]
    assert any(stray in reason for reason in letter["reasons"]) or stray in letter["body"]

    # The other tenant sees none of it.
    other = watched(srv, "globex")
    assert other["connectors"] == []
    assert other["dead_letters"] == {"open": [], "more": False}
    assert other["totals"]["accepted"] == 0


def test_health_shows_at_most_twenty_open_dead_letters(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    with Webhooks(srv, "acme") as acme:
        connector = acme.connector("instagram")
        for _ in range(21):
            body = comments(unique("1784"), unique("c"))
            signed = meta_signed(connector.secret(), body)
            assert acme.deliver(connector, body, signed).status_code == 200
        letters = acme.dead_letters(connector, state="open", limit=100)
    answer = watched(srv, "acme")
    assert len(letters) == 21
    assert answer["dead_letters"]["more"] is True
    shown = [d["id"] for d in answer["dead_letters"]["open"]]
    assert shown == [d["id"] for d in letters[:20]]  # the oldest, in the listing's order
