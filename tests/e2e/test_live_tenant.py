"""Live subscriptions that follow a whole tenant, end to end.

A filter naming no influencer, campaign or content item (``{}``, or only ``platform``)
follows every influencer of the key's tenant: over WebSocket, over SSE without filter
parameters, and through a stream token issued for such a filter. Each test starts
its own server and reuses the clients of ``test_live`` (``live``, ``sse``, ``ingest``);
every event that should count carries a time of today (UTC), and every expected
total is a plain sum over what the test ingested.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .support import ServerFactory, new_id, rfc3339
from .test_live import (
    FAST,
    NOW,
    day_range,
    day_start,
    ev,
    ingest,
    issue_token,
    live,
    request,
    same_numbers,
    sse,
    today,
)

WHOLE: dict[str, str] = {}


def sums(events: list[dict[str, Any]], *metrics: str, **where: str) -> dict[str, float]:
    """Plain sums of today's events that match ``where``; engagement as the API counts it."""
    start = rfc3339(day_start())
    picked = [
        e
        for e in events
        if e["ts"] >= start and all(e.get(name) == value for name, value in where.items())
    ]
    totals = {m: sum(e["value"] for e in picked if e["metric"] == m) for m in metrics}
    if "engagement" in metrics:
        engaging = ("likes", "comments", "shares", "saves")
        totals["engagement"] = sum(e["value"] for e in picked if e["metric"] in engaging)
    return totals


async def tenant_series(srv: Any, metrics: str, key: str, **params: str) -> dict[str, Any]:
    """Today's totals of ``GET /v1/metrics/series``."""
    response = await request(
        srv,
        "GET",
        "/v1/metrics/series",
        key,
        params={**day_range(), "granularity": "day", "metrics": metrics, **params},
    )
    assert response.status_code == 200, response.text
    totals: dict[str, Any] = response.json()["totals"]
    return totals


async def test_a_whole_tenant_subscription_counts_every_influencer(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST, **NOW)
    acme, globex = srv.keys["acme"], srv.keys["globex"]
    infs = [new_id("inf") for _ in range(3)]
    yesterday = rfc3339(day_start() - dt.timedelta(hours=2))
    before = [
        ev(influencer_id=infs[0], value=3),
        ev(influencer_id=infs[1], value=4, platform="tiktok", ts=today(0.1)),
        ev(influencer_id=infs[2], metric="comments", value=2),
        ev(influencer_id=infs[2], value=50, ts=yesterday),  # before the live range
    ]
    await ingest(srv, before, acme.ingest)
    await ingest(srv, [ev(influencer_id=infs[0], value=1000)], globex.ingest)

    async with live(srv, acme.read) as ws:
        snap = await ws.subscribe("t", WHOLE, ["likes", "comments"], granularity="day")
        assert snap["filter"] == {}
        assert snap["since"] == rfc3339(day_start())
        assert snap["totals"] == sums(before, "likes", "comments") == {"likes": 7, "comments": 2}
        assert snap["bucket"] == {"ts": rfc3339(day_start()), "likes": 7, "comments": 2}

        # One commit of three influencers (one new), one update with all of them.
        batch = [
            ev(influencer_id=infs[0], value=1),
            ev(influencer_id=infs[1], metric="comments", value=5),
            ev(influencer_id=new_id("inf"), value=10, platform="youtube"),
        ]
        await ingest(srv, batch, acme.ingest)
        update = await ws.expect("update", "t")
        assert update["totals"] == {"likes": 18, "comments": 7}
        assert update["deltas"] == [{"ts": rfc3339(day_start()), "likes": 11, "comments": 5}]

        # Another tenant's commit moves nothing: the next update is acme's next commit.
        await ingest(srv, [ev(influencer_id=infs[1], value=500)], globex.ingest)
        await ingest(srv, [ev(influencer_id=infs[2], value=2)], acme.ingest)
        update = await ws.expect("update", "t")
        assert update["totals"] == sums([*before, *batch, ev(value=2)], "likes", "comments")
        assert update["totals"] == {"likes": 20, "comments": 7}

        # The query API's tenant-wide series agrees.
        truth = await tenant_series(srv, "likes,comments", acme.read)
        assert same_numbers(truth, update["totals"]), truth


async def test_platform_only_and_narrower_subscriptions_side_by_side(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    acme = srv.keys["acme"]
    one, two = new_id("inf"), new_id("inf")
    metrics = ["likes", "comments", "engagement"]
    events: list[dict[str, Any]] = []
    async with live(srv, acme.read) as ws:
        for sub_id, live_filter in (
            ("all", WHOLE),
            ("tiktok", {"platform": "tiktok"}),
            ("one", {"influencer_id": one}),
            ("one-tiktok", {"influencer_id": one, "platform": "tiktok"}),
        ):
            snap = await ws.subscribe(sub_id, live_filter, metrics, granularity="hour")
            assert snap["filter"] == live_filter
            assert snap["totals"] == {"likes": 0, "comments": 0, "engagement": 0}
        for batch in (
            [
                ev(influencer_id=one, platform="tiktok", value=2),
                ev(influencer_id=two, platform="tiktok", metric="comments", value=3),
                ev(influencer_id=two, platform="instagram", value=7),
            ],
            [
                ev(influencer_id=one, platform="instagram", metric="shares", value=4),
                ev(influencer_id=two, platform="tiktok", metric="saves", value=1),
                ev(influencer_id=new_id("inf"), platform="tiktok", value=6),
            ],
        ):
            events += batch
            await ingest(srv, batch, acme.ingest)

        expected = {
            "all": sums(events, *metrics),
            "tiktok": sums(events, *metrics, platform="tiktok"),
            "one": sums(events, *metrics, influencer_id=one),
            "one-tiktok": sums(events, *metrics, influencer_id=one, platform="tiktok"),
        }
        assert expected["all"] == {"likes": 15, "comments": 3, "engagement": 23}
        assert expected["tiktok"] == {"likes": 8, "comments": 3, "engagement": 12}
        for sub_id, totals in expected.items():
            if not same_numbers(ws.latest(sub_id), totals):
                await ws.until_totals(sub_id, totals)
        assert same_numbers(
            await tenant_series(srv, "likes,comments,engagement", acme.read, platform="tiktok"),
            expected["tiktok"],
        )


async def test_a_whole_tenant_subscription_never_sees_another_tenant(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST, **NOW)
    acme, globex = srv.keys["acme"], srv.keys["globex"]
    inf = new_id("inf")  # the same influencer id in both tenants
    async with live(srv, acme.read) as a, live(srv, globex.read) as g:
        assert (await a.subscribe("x", WHOLE, ["likes"]))["totals"] == {"likes": 0}
        assert (await g.subscribe("x", {"platform": "instagram"}, ["likes"]))["totals"] == {
            "likes": 0
        }
        for value in (100, 200):
            await ingest(srv, [ev(influencer_id=inf, value=value)], acme.ingest)
        await ingest(srv, [ev(influencer_id=new_id("inf"), value=1)], globex.ingest)
        # globex's first update is its own commit alone.
        assert (await g.expect("update", "x"))["totals"] == {"likes": 1}
        totals = [m["totals"]["likes"] for m in await g.sync() if m["type"] == "update"]
        assert totals == []
        await a.until_totals("x", {"likes": 300})
        assert not [m for m in await a.sync() if m["type"] == "update"]


async def test_a_tail_of_the_whole_tenant_is_refused(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    async with live(srv, srv.keys["acme"].read) as ws:
        for live_filter in (WHOLE, {"platform": "tiktok"}, {"campaign_id": "c"}):
            error = await ws.error({"op": "tail", "id": "t", "filter": live_filter})
            assert (error["code"], error["field"], error["id"]) == ("invalid_input", "filter", "t")
        # The connection still serves a whole-tenant subscription.
        await ws.subscribe("s", WHOLE, ["likes"])
        await ingest(srv, [ev(value=3)])
        await ws.until_totals("s", {"likes": 3})


async def test_a_tenant_wide_stream_token(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    acme = srv.keys["acme"]
    inf = new_id("inf")
    await ingest(srv, [ev(influencer_id=inf, value=2), ev(influencer_id=new_id("inf"), value=5)])
    issued = await issue_token(srv, {"metrics": ["likes"], "tail": True}, acme.read)
    token = issued["token"]
    sse_url = urlsplit(issued["sse_url"])
    assert sse_url.path == "/v1/stream/sse"
    assert parse_qsl(sse_url.query) == [
        ("metrics", "likes"),
        ("granularity", "minute"),
        ("token", token),
    ]

    async with live(srv, token=token) as ws:
        whole = await ws.subscribe("all", WHOLE, ["likes"], granularity="day")
        assert (whole["filter"], whole["totals"]) == ({}, {"likes": 7})
        # Any narrower filter is allowed too.
        narrower = [
            ("inf", {"influencer_id": inf}, {"likes": 2}),
            ("tiktok", {"platform": "tiktok"}, {"likes": 0}),
            ("camp", {"campaign_id": "camp-1"}, {"likes": 0}),
            ("post", {"content_id": "post-1"}, {"likes": 7}),
        ]
        for sub_id, live_filter, totals in narrower:
            snap = await ws.subscribe(sub_id, live_filter, ["likes"], granularity="day")
            assert snap["totals"] == totals, sub_id
        # So is a tail of one influencer; not one of the whole tenant, nor other metrics.
        await ws.send({"op": "tail", "id": "tail", "filter": {"influencer_id": inf}})
        await ws.expect("tailing", "tail")
        error = await ws.error({"op": "tail", "id": "t2", "filter": WHOLE})
        assert (error["code"], error["field"]) == ("invalid_input", "filter")
        error = await ws.error(
            {"op": "subscribe", "id": "m", "filter": WHOLE, "metrics": ["comments"]}
        )
        assert (error["code"], error["field"]) == ("forbidden", "metrics")

        await ingest(srv, [ev(influencer_id=new_id("inf"), platform="tiktok", value=4)])
        for sub_id, totals in (("all", {"likes": 11}), ("tiktok", {"likes": 4})):
            if ws.latest(sub_id) != totals:  # (one may come before the other)
                await ws.until_totals(sub_id, totals)

    async with sse(srv, {}, path=issued["sse_url"]) as stream:
        assert stream.response.status_code == 200
        snap = await stream.expect("snapshot")
        assert (snap.data["filter"], snap.data["totals"]) == ({}, {"likes": 11})

    # A token is no API key, and a globex key cannot revoke acme's token.
    response = await request(srv, "GET", "/v1/metrics/series", token)
    assert response.status_code == 401
    path = f"/v1/metrics/subscribe/{issued['subscription_id']}"
    assert (await request(srv, "DELETE", path, srv.keys["globex"].read)).status_code == 404


async def test_narrow_stream_tokens_cannot_widen_to_the_tenant(make_server: ServerFactory) -> None:
    srv = make_server(**FAST)
    read = srv.keys["acme"].read
    inf = new_id("inf")
    of_one = await issue_token(srv, {"influencer_id": inf, "metrics": ["likes"]}, read)
    of_tiktok = await issue_token(srv, {"platform": "tiktok", "metrics": ["likes"]}, read)
    assert parse_qsl(urlsplit(of_tiktok["sse_url"]).query)[0] == ("platform", "tiktok")

    async with live(srv, token=of_one["token"]) as ws:
        for live_filter in (WHOLE, {"platform": "tiktok"}):
            error = await ws.error(
                {"op": "subscribe", "id": "w", "filter": live_filter, "metrics": ["likes"]}
            )
            assert (error["code"], error["field"]) == ("forbidden", "filter")
    async with live(srv, token=of_tiktok["token"]) as ws:
        error = await ws.error(
            {"op": "subscribe", "id": "w", "filter": WHOLE, "metrics": ["likes"]}
        )
        assert (error["code"], error["field"]) == ("forbidden", "filter")
        error = await ws.error(
            {"op": "subscribe", "id": "w", "filter": {"platform": "youtube"}, "metrics": ["likes"]}
        )
        assert (error["code"], error["field"]) == ("forbidden", "filter")
        await ws.subscribe("t", {"platform": "tiktok"}, ["likes"])
        await ws.subscribe("ti", {"platform": "tiktok", "influencer_id": inf}, ["likes"])
        await ingest(
            srv,
            [
                ev(influencer_id=inf, platform="tiktok", value=3),
                ev(influencer_id=new_id("inf"), platform="tiktok", value=1),
                ev(influencer_id=inf, platform="instagram", value=100),
            ],
        )
        for sub_id, totals in (("t", {"likes": 4}), ("ti", {"likes": 3})):
            if ws.latest(sub_id) != totals:
                await ws.until_totals(sub_id, totals)


async def test_sse_without_filter_parameters_follows_the_tenant(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST, **NOW)
    acme, globex = srv.keys["acme"], srv.keys["globex"]
    first = [ev(influencer_id=new_id("inf"), value=v) for v in (1, 2)]
    await ingest(srv, first, acme.ingest)
    await ingest(srv, [ev(value=40)], globex.ingest)
    params = {"metrics": "likes,engagement", "granularity": "day"}
    async with sse(srv, params, acme.read) as stream:
        assert stream.response.status_code == 200
        snap = await stream.expect("snapshot")
        assert snap.data["filter"] == {}
        assert snap.data["totals"] == {"likes": 3, "engagement": 3}
        await ingest(srv, [ev(value=500)], globex.ingest)
        second = [
            ev(influencer_id=new_id("inf"), value=4),
            ev(influencer_id=new_id("inf"), metric="comments", value=6),
        ]
        await ingest(srv, second, acme.ingest)
        update = await stream.expect("update")
        assert update.data["totals"] == sums([*first, *second], "likes", "engagement")
        assert update.data["totals"] == {"likes": 7, "engagement": 13}
        assert update.id == snap.id + 1
    # The API's refusals still come before any stream.
    async with sse(srv, params, acme.ingest) as stream:
        assert stream.response.status_code == 403
    async with sse(srv, params) as stream:
        assert stream.response.status_code == 401
    async with sse(srv, {"metrics": "nope"}, acme.read) as stream:
        assert stream.response.status_code == 400


FOLLOWER_METRICS = ["likes", "engagement", "followers", "follower_growth", "engagement_rate"]


async def test_whole_tenant_follower_metrics_equal_the_query_api(
    make_server: ServerFactory,
) -> None:
    srv = make_server(**FAST)
    acme, globex = srv.keys["acme"], srv.keys["globex"]
    one, two, three = (new_id("inf") for _ in range(3))

    def reading(inf: str, value: float, **fields: Any) -> dict[str, Any]:
        return ev(influencer_id=inf, metric="followers", kind="snapshot", value=value, **fields)

    await ingest(
        srv,
        [
            reading(one, 1000, ts=today(0.1)),
            reading(two, 400, platform="tiktok", ts=today(0.2)),
            ev(influencer_id=one, value=10, ts=today(0.3)),
        ],
        acme.ingest,
    )
    await ingest(srv, [reading(one, 99_999, ts=today(0.1))], globex.ingest)
    metrics = ",".join(FOLLOWER_METRICS)
    async with live(srv, acme.read) as ws:
        snap = await ws.subscribe("f", WHOLE, FOLLOWER_METRICS, granularity="day")
        truth = await tenant_series(srv, metrics, acme.read)
        assert same_numbers(
            truth,
            {
                "likes": 10,
                "engagement": 10,
                "followers": 1400,
                "follower_growth": 0,
                "engagement_rate": 10 / 1400 * 100,
            },
        ), truth
        assert same_numbers(snap["totals"], truth), snap["totals"]

        await ingest(
            srv,
            [
                reading(one, 1100),  # grows by 100
                reading(three, 600, platform="youtube"),  # a new account: its first reading
                ev(influencer_id=two, platform="tiktok", metric="comments", value=4),
            ],
            acme.ingest,
        )
        expected = {
            "likes": 10,
            "engagement": 14,
            "followers": 2100,
            "follower_growth": 100,
            "engagement_rate": 14 / 2000 * 100,
        }
        updates = await ws.until_totals("f", expected)
        truth = await tenant_series(srv, metrics, acme.read)
        assert same_numbers(truth, expected), truth
        assert same_numbers(updates[-1]["totals"], truth)
