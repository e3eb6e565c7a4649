"""Every status code of POST /v1/events, over real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator

import httpx
import pytest

from .support import LiveServer, ServerFactory, accepted_total, bearer, event, new_id

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def post(srv: LiveServer, key: str | None, body: bytes, headers: dict[str, str]) -> httpx.Response:
    with srv.client(key) as client:
        return client.post("/v1/events", content=body, headers=headers)


def ndjson(*lines: object) -> bytes:
    return b"\n".join(
        line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines
    )


# -- 200 ----------------------------------------------------------------------


def test_200_reports_accepted_duplicates_and_rejected_by_index_and_field(
    server: LiveServer,
) -> None:
    key = server.keys["acme"].ingest
    first = event()
    assert server.post_events(key, [first]).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }

    b, c = event(), event()
    batch = [
        b,
        {**b},  # the same event_id again in the same batch
        event(platform="myspace"),
        c,
        event(metric="frobs"),
        {**first},  # already stored by the previous request
    ]
    response = server.post_events(key, batch)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["accepted"] == 2
    assert body["duplicates"] == 2
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [
        (2, "platform"),
        (4, "metric"),
    ]
    assert "myspace" in body["rejected"][0]["error"]
    assert "frobs" in body["rejected"][1]["error"]

    stored = server.rows("SELECT event_id FROM events WHERE tenant_id = 'acme'")
    assert sorted(r[0] for r in stored) == sorted([first["event_id"], b["event_id"], c["event_id"]])


# -- 400 ----------------------------------------------------------------------


def test_400_when_the_body_is_not_json_names_the_line(shared_server: LiveServer) -> None:
    body = b'[\n{"influencer_id": "a"},\n{"influencer_id": oops}\n]'
    response = post(shared_server, shared_server.keys["acme"].ingest, body, JSON)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == "body"
    assert "line 3" in error["message"]


def test_400_when_no_ndjson_line_is_valid_names_each_line(shared_server: LiveServer) -> None:
    body = ndjson(
        b"{not json",
        b"",
        event(platform="myspace"),
        b"[1, 2]",
    )
    response = post(shared_server, shared_server.keys["acme"].ingest, body, NDJSON)

    assert response.status_code == 400
    payload = response.json()
    assert payload["error"]["code"] == "all_events_rejected"
    assert payload["accepted"] == 0
    assert payload["duplicates"] == 0
    assert [(r["index"], r["field"]) for r in payload["rejected"]] == [
        (0, None),
        (2, "platform"),
        (3, None),
    ]
    assert "JSON" in payload["rejected"][0]["error"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(b"", JSON, id="empty-json"),
        pytest.param(b"[]", JSON, id="empty-array"),
        pytest.param(b"", NDJSON, id="empty-ndjson"),
        pytest.param(b"\n  \r\n\t\n", NDJSON, id="blank-ndjson"),
    ],
)
def test_400_when_the_body_holds_no_event(
    shared_server: LiveServer, body: bytes, headers: dict[str, str]
) -> None:
    response = post(shared_server, shared_server.keys["acme"].ingest, body, headers)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == "body"
    if body.strip():
        assert "no events" in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"this is not gzip", id="not-gzip"),
        pytest.param(gzip.compress(json.dumps([event()]).encode())[:-12], id="truncated"),
    ],
)
def test_400_bad_gzip(shared_server: LiveServer, body: bytes) -> None:
    response = post(
        shared_server, shared_server.keys["acme"].ingest, body, {**JSON, "Content-Encoding": "gzip"}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"] == "body"
    assert "gzip" in error["message"]


def test_400_when_every_event_is_invalid_with_the_same_rejected_list(
    server: LiveServer,
) -> None:
    key = server.keys["acme"].ingest
    invalid = [
        event(platform="myspace"),
        event(ts="yesterday"),
        event(value="lots"),
        event(kind="cumulative"),
        {"platform": "instagram", "metric": "likes"},
    ]
    all_bad = server.post_events(key, invalid)
    mixed = server.post_events(key, [*invalid, event()])

    assert all_bad.status_code == 400
    assert mixed.status_code == 200
    assert all_bad.json()["error"]["code"] == "all_events_rejected"
    assert all_bad.json()["accepted"] == 0
    assert mixed.json()["accepted"] == 1
    assert all_bad.json()["rejected"] == mixed.json()["rejected"]
    assert [(r["index"], r["field"]) for r in all_bad.json()["rejected"]] == [
        (0, "platform"),
        (1, "ts"),
        (2, "value"),
        (3, "kind"),
        (4, "influencer_id"),
    ]
    assert server.stored_count("acme") == 1


# -- 401 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-key"),
        pytest.param(bearer("hm_000000000000_not-a-real-key"), id="unknown-key"),
        pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
        pytest.param({"Authorization": "Token abc"}, id="unknown-scheme"),
        pytest.param({"Authorization": "Basic !!!not-base64"}, id="bad-basic"),
    ],
)
def test_401_without_a_valid_key(shared_server: LiveServer, headers: dict[str, str]) -> None:
    with shared_server.client() as client:
        response = client.post("/v1/events", json=[event()], headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.json()["error"]["field"] == "Authorization"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert accepted_total(shared_server) == 0


# -- 403 ----------------------------------------------------------------------


def test_403_read_key_cannot_ingest(shared_server: LiveServer) -> None:
    response = shared_server.post_events(shared_server.keys["acme"].read, [event()])

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert "ingest" in error["message"]
    assert accepted_total(shared_server) == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/admin/keys", None),
        ("POST", "/v1/admin/keys", {"scopes": ["admin"]}),
        ("DELETE", "/v1/admin/keys/000000000000", None),
        ("GET", "/v1/admin/metrics", None),
        ("POST", "/v1/admin/metrics", {"name": "story_replies"}),
    ],
)
def test_403_ingest_key_cannot_administer(
    shared_server: LiveServer, method: str, path: str, body: object
) -> None:
    with shared_server.client(shared_server.keys["acme"].ingest) as client:
        response = client.request(method, path, json=body)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "admin" in response.json()["error"]["message"]


# -- 413 ----------------------------------------------------------------------


def test_413_over_10000_events_names_max_events_per_request(shared_server: LiveServer) -> None:
    body = b"[" + b",".join([b"{}"] * 10_001) + b"]"
    response = post(shared_server, shared_server.keys["acme"].ingest, body, JSON)

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["limit"] == "max_events_per_request"
    assert error["max"] == 10_000
    assert "max_events_per_request" in error["message"]


def test_413_ndjson_over_the_event_limit(make_server: ServerFactory) -> None:
    srv = make_server(max_events_per_request=5)
    key = srv.keys["acme"].ingest
    ok = post(srv, key, ndjson(*[event() for _ in range(5)]), NDJSON)
    too_many = post(srv, key, ndjson(*[event() for _ in range(6)]), NDJSON)

    assert ok.status_code == 200
    assert ok.json()["accepted"] == 5
    assert too_many.status_code == 413
    assert too_many.json()["error"]["limit"] == "max_events_per_request"
    assert too_many.json()["error"]["max"] == 5
    assert srv.stored_count("acme") == 5


def _padded_batch(size: int) -> bytes:
    """A valid one-event JSON array of at least ``size`` bytes."""
    return json.dumps([event(text="x" * size)]).encode()


def test_413_body_over_max_body_bytes(make_server: ServerFactory) -> None:
    srv = make_server(max_body_bytes=2048)
    key = srv.keys["acme"].ingest
    body = _padded_batch(3000)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    declared = post(srv, key, body, JSON)
    with srv.client(key) as client:
        streamed = client.post("/v1/events", content=chunks(), headers=JSON)
    bomb = post(
        srv,
        key,
        gzip.compress(json.dumps([event(text=" " * 50_000)]).encode()),
        {**JSON, "Content-Encoding": "gzip"},
    )

    assert "content-length" not in streamed.request.headers
    for response in (declared, streamed, bomb):
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["code"] == "payload_too_large"
        assert error["limit"] == "max_body_bytes"
        assert error["max"] == 2048
        assert "max_body_bytes" in error["message"]
    assert len(gzip.compress(json.dumps([event(text=" " * 50_000)]).encode())) < 2048
    assert srv.stored_count("acme") == 0


# -- 415 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        pytest.param({"Content-Type": "text/plain"}, "Content-Type", id="text-plain"),
        pytest.param({"Content-Type": "application/xml"}, "Content-Type", id="xml"),
        pytest.param({"Content-Type": ""}, "Content-Type", id="empty-type"),
        pytest.param({**JSON, "Content-Encoding": "br"}, "Content-Encoding", id="brotli"),
        pytest.param({**JSON, "Content-Encoding": "deflate"}, "Content-Encoding", id="deflate"),
    ],
)
def test_415_unsupported_media(
    shared_server: LiveServer, headers: dict[str, str], field: str
) -> None:
    body = json.dumps([event()]).encode()
    response = post(shared_server, shared_server.keys["acme"].ingest, body, headers)

    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert error["field"] == field
    assert accepted_total(shared_server) == 0


def test_415_without_content_type(shared_server: LiveServer) -> None:
    request = httpx.Request(
        "POST",
        f"{shared_server.url}/v1/events",
        content=json.dumps([event()]).encode(),
        headers=bearer(shared_server.keys["acme"].ingest),
    )
    assert "content-type" not in request.headers
    with httpx.Client(timeout=30) as client:
        response = client.send(request)

    assert response.status_code == 415
    assert response.json()["error"]["field"] == "Content-Type"


# -- 429 ----------------------------------------------------------------------


def _rate_headers(response: httpx.Response) -> dict[str, int]:
    out = {}
    for name in ("Limit", "Remaining", "Reset"):
        value = response.headers[f"RateLimit-{name}"]
        assert response.headers[f"X-RateLimit-{name}"] == value
        out[name] = int(value)
    return out


def test_429_request_rate_limit_with_headers(make_server: ServerFactory) -> None:
    srv = make_server(rate_limit="3/minute")
    key = srv.keys["acme"].ingest
    refused = event()

    with srv.client(key) as client:
        answers = [client.post("/v1/events", json=[event()]) for _ in range(3)]
        limited = client.post("/v1/events", json=[refused])

    assert [r.status_code for r in answers] == [200, 200, 200]
    states = [_rate_headers(r) for r in answers]
    assert [s["Limit"] for s in states] == [3, 3, 3]
    assert [s["Remaining"] for s in states] == [2, 1, 0]
    assert all(1 <= s["Reset"] <= 60 for s in states)

    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    state = _rate_headers(limited)
    assert state["Limit"] == 3
    assert state["Remaining"] == 0
    assert state["Reset"] == retry_after

    # The limit is per key: a second ingest key of the same tenant still gets in,
    # and the refused event was not stored (it is new to the store, not a duplicate).
    with srv.client(srv.keys["acme"].admin) as admin:
        second = admin.post("/v1/admin/keys", json={"scopes": ["ingest"]}).json()["key"]
    other = srv.post_events(second, [refused])
    assert other.status_code == 200
    assert other.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert srv.stored_count("acme") == 4


def test_429_event_rate_limit(make_server: ServerFactory) -> None:
    srv = make_server(rate_limit_events="5/minute")
    key = srv.keys["acme"].ingest
    first = [event() for _ in range(3)]
    second = [event() for _ in range(3)]

    ok = srv.post_events(key, first)
    limited = srv.post_events(key, second)

    assert ok.status_code == 200
    assert ok.json()["accepted"] == 3
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert "events" in limited.json()["error"]["message"]
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["RateLimit-Limit"] == "5"
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert srv.stored_count("acme") == 3


# -- 503 ----------------------------------------------------------------------

BATCH = 200


@pytest.fixture
def small_queue_server(make_server: ServerFactory) -> LiveServer:
    """Room for three batches waiting for their commit; more are shed."""
    return make_server(
        ingest_queue_events=3 * BATCH, max_events_per_request=BATCH, metrics_token="tok-queue"
    )


async def test_503_when_the_ingest_queue_is_full(small_queue_server: LiveServer) -> None:
    srv = small_queue_server
    key = srv.keys["acme"].ingest
    sent: list[list[dict[str, object]]] = []
    answers: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(
        base_url=srv.url, headers=bearer(key), timeout=60, limits=limits
    ) as client:
        for _ in range(10):
            batches = [[event(event_id=new_id("q")) for _ in range(BATCH)] for _ in range(24)]
            replies = await asyncio.gather(
                *(client.post("/v1/events", json=batch) for batch in batches)
            )
            sent.extend(batches)
            answers.extend(replies)
            if any(r.status_code == 503 for r in replies):
                break

        assert {r.status_code for r in answers} <= {200, 503}
        shed = [b for b, r in zip(sent, answers, strict=True) if r.status_code == 503]
        assert shed, "no request was shed with 503"
        assert len(shed) < len(sent), "no request got through"
        accepted = 0
        for response in answers:
            if response.status_code == 200:
                assert response.json() == {"accepted": BATCH, "duplicates": 0, "rejected": []}
                accepted += BATCH
            else:
                assert response.json()["error"]["code"] == "overloaded"
                assert "ingest_queue_events" in response.json()["error"]["message"]
                assert int(response.headers["Retry-After"]) >= 1

        # A shed batch left nothing behind: sent again, all of it is new.
        for batch in shed[:3]:
            again = await client.post("/v1/events", json=batch)
            assert again.status_code == 200
            assert again.json()["accepted"] == BATCH
            accepted += BATCH

        # Shedding left no phantom work behind in the queue.
        scrape = await client.get("/metrics", headers=bearer("tok-queue"))
        assert "\nhypemeter_ingest_queue_depth 0.0\n" in scrape.text
        assert f'hypemeter_events_accepted_total{{tenant="acme"}} {float(accepted)}' in scrape.text

    assert await asyncio.to_thread(srv.stored_count, "acme") == accepted
