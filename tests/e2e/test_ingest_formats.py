"""Ingest formats and semantics: gzip, NDJSON, arrays, oversize events, /v1/track,
HTTP Basic, normalisation, snapshots and custom metrics."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable

import httpx
import pytest

from .support import LiveServer, ServerFactory, event, new_id, rfc3339, utc_now

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
GZIP = {"Content-Encoding": "gzip"}


def to_us(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def post_raw(srv: LiveServer, key: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    with srv.client(key) as client:
        return client.post("/v1/events", content=body, headers=headers)


def stored_ids(srv: LiveServer, tenant: str = "acme") -> set[str]:
    rows = srv.rows("SELECT event_id FROM events WHERE tenant_id = ?", [tenant])
    return {r[0] for r in rows}


@pytest.mark.parametrize(
    ("media", "encode"),
    [
        pytest.param(JSON, lambda evs: json.dumps(evs).encode(), id="json-array"),
        pytest.param(
            {"Content-Type": "application/x-ndjson"},
            lambda evs: "\n".join(json.dumps(e) for e in evs).encode(),
            id="ndjson",
        ),
        pytest.param(
            {"Content-Type": "application/json; charset=utf-8"},
            lambda evs: json.dumps(evs).encode(),
            id="json-with-charset",
        ),
    ],
)
@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_batches_in_every_format_are_stored(
    server: LiveServer,
    media: dict[str, str],
    encode: Callable[[list[dict[str, object]]], bytes],
    gzipped: bool,
) -> None:
    events = [event() for _ in range(4)]
    body = encode(events)
    headers = dict(media)
    if gzipped:
        body = gzip.compress(body)
        headers.update(GZIP)

    response = post_raw(server, server.keys["acme"].ingest, body, headers)

    assert response.status_code == 200
    assert response.json() == {"accepted": 4, "duplicates": 0, "rejected": []}
    assert stored_ids(server) == {e["event_id"] for e in events}


def test_a_single_json_object_is_one_event(server: LiveServer) -> None:
    one = event()
    response = post_raw(server, server.keys["acme"].ingest, json.dumps(one).encode(), JSON)

    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert stored_ids(server) == {one["event_id"]}


def test_ndjson_index_is_the_zero_based_line_number(server: LiveServer) -> None:
    good = [event() for _ in range(3)]
    lines = [
        json.dumps(good[0]),  # 0
        "",  # 1: blank lines are skipped but still counted
        json.dumps(event(platform="myspace")),  # 2
        json.dumps(good[1]),  # 3
        "   ",  # 4
        '{"influencer_id": ',  # 5: not JSON
        json.dumps(good[2]),  # 6
        json.dumps(event(metric="frobs")),  # 7
    ]
    body = gzip.compress("\r\n".join(lines).encode() + b"\n")
    response = post_raw(server, server.keys["acme"].ingest, body, {**NDJSON, **GZIP})

    assert response.status_code == 200
    payload = response.json()
    assert payload["accepted"] == 3
    assert [(r["index"], r["field"]) for r in payload["rejected"]] == [
        (2, "platform"),
        (5, None),
        (7, "metric"),
    ]
    assert stored_ids(server) == {e["event_id"] for e in good}


def test_json_array_index_is_the_position(server: LiveServer) -> None:
    good = event()
    response = server.post_events(
        server.keys["acme"].ingest,
        [event(ts="not a time"), 42, good, event(influencer_id=""), None],
    )

    assert response.status_code == 200
    payload = response.json()
    assert payload["accepted"] == 1
    assert [(r["index"], r["field"]) for r in payload["rejected"]] == [
        (0, "ts"),
        (1, None),
        (3, "influencer_id"),
        (4, None),
    ]


def test_an_oversize_event_is_rejected_while_the_rest_go_in(
    make_server: ServerFactory,
) -> None:
    srv = make_server(max_event_bytes=1024)
    small = [event(), event()]
    big = event(text="x" * 2000)

    response = srv.post_events(srv.keys["acme"].ingest, [small[0], big, small[1]])

    assert response.status_code == 200
    payload = response.json()
    assert payload["accepted"] == 2
    assert len(payload["rejected"]) == 1
    rejected = payload["rejected"][0]
    assert rejected["index"] == 1
    assert "max_event_bytes" in rejected["error"]
    assert stored_ids(srv) == {e["event_id"] for e in small}


# -- /v1/track/{metric} ------------------------------------------------------------


def test_track_takes_the_metric_from_the_path_and_defaults(server: LiveServer) -> None:
    before = utc_now() - dt.timedelta(seconds=1)
    first = new_id("trk")
    second = new_id("trk")
    with server.client(server.keys["acme"].ingest) as client:
        r1 = client.post("/v1/track/video-view", json={"influencer_id": "inf-7", "event_id": first})
        r2 = client.post(
            "/v1/track/Click",
            json={
                "influencer_id": "inf-7",
                "event_id": second,
                "platform": "IG",
                "ts": "2026-11-21T10:00:00Z",
                "value": 3,
            },
        )
        again = client.post(
            "/v1/track/video-view", json={"influencer_id": "inf-7", "event_id": first}
        )
    after = utc_now() + dt.timedelta(seconds=1)

    assert r1.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert r2.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    rows = {
        r[0]: r[1:]
        for r in server.rows(
            "SELECT event_id, metric, platform, epoch_us(ts), value, influencer_id FROM events "
            "WHERE tenant_id = 'acme'"
        )
    }
    metric, platform, ts_us, value, influencer = rows[first]
    assert (metric, platform, value, influencer) == ("views", "app", 1.0, "inf-7")
    assert to_us(before) <= ts_us <= to_us(after)
    metric, platform, ts_us, value, _ = rows[second]
    assert (metric, platform, value) == ("clicks", "instagram", 3.0)
    assert ts_us == to_us(dt.datetime(2026, 11, 21, 10, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        pytest.param("/v1/track/frobs", {"influencer_id": "a"}, "metric", id="unknown-metric"),
        pytest.param("/v1/track/likes", {"platform": "app"}, "influencer_id", id="no-influencer"),
        pytest.param("/v1/track/likes", {"influencer_id": "a", "x": 1}, "x", id="unknown-field"),
    ],
)
def test_track_rejects_bad_events(
    server: LiveServer, path: str, body: dict[str, object], field: str
) -> None:
    with server.client(server.keys["acme"].ingest) as client:
        response = client.post(path, json=body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["accepted"] == 0
    assert [(r["index"], r["field"]) for r in payload["rejected"]] == [(0, field)]


def test_track_with_an_empty_body_is_400(server: LiveServer) -> None:
    with server.client(server.keys["acme"].ingest) as client:
        response = client.post("/v1/track/likes", content=b"", headers=JSON)

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "body"


def test_track_gzip_body(server: LiveServer) -> None:
    body = gzip.compress(json.dumps({"influencer_id": "inf-1", "event_id": new_id()}).encode())
    with server.client(server.keys["acme"].ingest) as client:
        response = client.post("/v1/track/share", content=body, headers={**JSON, **GZIP})

    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert server.rows("SELECT metric FROM events") == [("shares",)]


def test_track_body_over_the_event_limit_names_max_event_bytes(
    make_server: ServerFactory,
) -> None:
    srv = make_server(max_event_bytes=1024)
    with srv.client(srv.keys["acme"].ingest) as client:
        response = client.post("/v1/track/likes", json={"influencer_id": "a", "text": "x" * 2000})

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["max"] == 1024
    assert error["limit"] == "max_event_bytes"


# -- HTTP Basic ------------------------------------------------------------------


def test_http_basic_with_the_key_as_user_name(server: LiveServer) -> None:
    one = event()
    with httpx.Client(base_url=server.url, auth=(server.keys["acme"].ingest, ""), timeout=30) as c:
        ok = c.post("/v1/events", json=[one])
    with httpx.Client(base_url=server.url, auth=("hm_nope", ""), timeout=30) as c:
        unknown = c.post("/v1/events", json=[event()])

    assert ok.request.headers["authorization"].startswith("Basic ")
    assert ok.status_code == 200
    assert ok.json()["accepted"] == 1
    assert unknown.status_code == 401
    assert stored_ids(server) == {one["event_id"]}


# -- normalisation and snapshots ---------------------------------------------------


def test_platform_metric_and_kind_are_normalised(server: LiveServer) -> None:
    cases = [
        (event(platform="IG", metric="like"), ("instagram", "likes", "delta")),
        (event(platform="Twitter", metric="Retweet"), ("x", "shares", "delta")),
        (event(platform="yt", metric="video-view"), ("youtube", "views", "delta")),
        (event(platform="android", metric="Link Click"), ("app", "clicks", "delta")),
        (event(platform="TikTok", metric="COMMENT", kind="Delta"), ("tiktok", "comments", "delta")),
        (
            event(platform="fb", metric="subscribers", kind="SNAPSHOT", value=5),
            ("facebook", "followers", "snapshot"),
        ),
    ]
    response = server.post_events(server.keys["acme"].ingest, [e for e, _ in cases])

    assert response.json() == {"accepted": len(cases), "duplicates": 0, "rejected": []}
    rows = {
        r[0]: tuple(r[1:])
        for r in server.rows("SELECT event_id, platform, metric, kind FROM events")
    }
    assert {e["event_id"]: want for e, want in cases} == rows


def test_snapshots_become_deltas(server: LiveServer) -> None:
    start = utc_now() - dt.timedelta(minutes=30)

    def reading(minute: int, value: float) -> dict[str, object]:
        return event(
            kind="snapshot",
            metric="likes",
            content_id="post-snap",
            value=value,
            ts=rfc3339(start + dt.timedelta(minutes=minute)),
        )

    readings = [reading(1, 10), reading(2, 15), reading(3, 12), reading(0, 100)]
    key = server.keys["acme"].ingest
    for one in readings[:2]:
        assert server.post_events(key, [one]).json()["accepted"] == 1
    response = server.post_events(key, [*readings[2:], reading(4, -1)])

    assert response.json()["accepted"] == 2
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [(2, "value")]
    deltas = dict(server.rows("SELECT event_id, delta FROM events WHERE kind = 'snapshot'"))
    assert [deltas[str(r["event_id"])] for r in readings] == [10.0, 5.0, -3.0, 0.0]


# -- custom metrics -------------------------------------------------------------------


def test_custom_metrics_registered_listed_and_ingested(make_server: ServerFactory) -> None:
    srv = make_server()
    acme = srv.keys["acme"]
    early = event(metric="story-replies")
    assert srv.post_events(acme.ingest, [early]).json()["rejected"][0]["field"] == "metric"

    with srv.client(acme.admin) as admin:
        created = admin.post("/v1/admin/metrics", json={"name": "Story-Replies"})
        gauge = admin.post("/v1/admin/metrics", json={"name": "live_viewers", "kind": "gauge"})
        again = admin.post("/v1/admin/metrics", json={"name": "story_replies"})
        builtin = admin.post("/v1/admin/metrics", json={"name": "likes"})
        bad_kind = admin.post("/v1/admin/metrics", json={"name": "zz", "kind": "histogram"})
        bad_name = admin.post("/v1/admin/metrics", json={"name": "no spaces!"})
        missing = admin.post("/v1/admin/metrics", json={})
        listed = admin.get("/v1/admin/metrics")

    assert created.status_code == 201
    assert created.json() == {"name": "story_replies", "kind": "counter"}
    assert gauge.json() == {"name": "live_viewers", "kind": "gauge"}
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert (builtin.status_code, builtin.json()["error"]["field"]) == (400, "name")
    assert (bad_kind.status_code, bad_kind.json()["error"]["field"]) == (400, "kind")
    assert (bad_name.status_code, bad_name.json()["error"]["field"]) == (400, "name")
    assert (missing.status_code, missing.json()["error"]["field"]) == (422, "name")
    assert listed.status_code == 200
    assert listed.json()["custom"] == [
        {"name": "live_viewers", "kind": "gauge"},
        {"name": "story_replies", "kind": "counter"},
    ]
    assert {"name": "likes", "kind": "counter"} in listed.json()["builtin"]

    ok = [event(metric="story-replies"), event(metric="Live Viewers", kind="snapshot", value=7)]
    assert srv.post_events(acme.ingest, ok).json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": [],
    }
    # Custom metrics belong to their tenant.
    other = srv.post_events(srv.keys["globex"].ingest, [event(metric="story_replies")])
    assert other.status_code == 400
    assert other.json()["rejected"][0]["field"] == "metric"
    with srv.client(srv.keys["globex"].admin) as admin:
        assert admin.get("/v1/admin/metrics").json()["custom"] == []

    # They survive a restart.
    srv.stop()
    again_srv = make_server(data=srv.data, keys=srv.keys)
    with again_srv.client(acme.admin) as admin:
        assert [m["name"] for m in admin.get("/v1/admin/metrics").json()["custom"]] == [
            "live_viewers",
            "story_replies",
        ]
    later = event(metric="story_replies")
    assert again_srv.post_events(acme.ingest, [later]).json()["accepted"] == 1
    metrics = dict(again_srv.rows("SELECT event_id, metric FROM events WHERE tenant_id='acme'"))
    assert metrics == {
        ok[0]["event_id"]: "story_replies",
        ok[1]["event_id"]: "live_viewers",
        later["event_id"]: "story_replies",
    }
