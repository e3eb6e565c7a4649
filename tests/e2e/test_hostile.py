"""Never a 500: hostile bodies get a 4xx naming what is wrong, and nothing is stored."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from .support import LiveServer, accepted_total, recent_ts

JSON = "application/json"
NDJSON = "application/x-ndjson"
DEPTH = 3000


def _event_bytes(**extra: str) -> bytes:
    """A valid event's JSON with raw JSON fragments spliced in as extra fields."""
    fields = {
        "influencer_id": '"inf-1"',
        "platform": '"instagram"',
        "metric": '"likes"',
        "ts": f'"{recent_ts()}"',
        **extra,
    }
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


def deep_array(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int = DEPTH) -> str:
    return '{"a":' * depth + "1" + "}" * depth


EVENTS_CASES = [
    pytest.param(JSON, deep_array(), id="deeply-nested-array"),
    pytest.param(
        JSON,
        b"[" + _event_bytes(properties=deep_object()) + b"]",
        id="deeply-nested-properties-in-array",
    ),
    pytest.param(
        NDJSON,
        _event_bytes(properties=deep_object()),
        id="deeply-nested-properties-ndjson",
    ),
    pytest.param(JSON, deep_array(200), id="nested-array-200"),
    pytest.param(JSON, b"[" + _event_bytes(value="1e999") + b"]", id="value-1e999"),
    pytest.param(JSON, b"[" + _event_bytes(value="9" * 400) + b"]", id="value-400-digits"),
    pytest.param(JSON, b"[" + _event_bytes(value="-1e309") + b"]", id="value-minus-1e309"),
    pytest.param(
        JSON,
        b"[" + _event_bytes(properties='{"n":' + "9" * 5000 + "}") + b"]",
        id="properties-5000-digit-int",
    ),
    pytest.param(JSON, b"[" + _event_bytes(value="NaN") + b"]", id="value-NaN"),
    pytest.param(JSON, b"[" + _event_bytes(value="Infinity") + b"]", id="value-Infinity"),
    pytest.param(JSON, b"[" + _event_bytes(value='"5"') + b"]", id="value-string"),
    pytest.param(JSON, b"[" + _event_bytes(value="true") + b"]", id="value-bool"),
    pytest.param(JSON, b'[{"influencer_id":7,"platform":1,"metric":2,"ts":3}]', id="all-numbers"),
    pytest.param(JSON, b"[" + _event_bytes(tags='"a,b"') + b"]", id="tags-string"),
    pytest.param(JSON, b"[" + _event_bytes(properties="[1,2]") + b"]", id="properties-array"),
    pytest.param(JSON, b"[" + _event_bytes(event_id='"' + "e" * 300 + '"') + b"]", id="long-id"),
    pytest.param(
        JSON, b"[" + _event_bytes(tags=json.dumps(["t"] * 100)) + b"]", id="too-many-tags"
    ),
    pytest.param(
        JSON,
        b'[{"influencer_id":"a","platform":"ig","metric":"likes","ts":"0001-01-01T00:00:00+14:00"}]',
        id="ts-year-1-plus-14h",
    ),
    pytest.param(
        JSON,
        b'[{"influencer_id":"a","platform":"ig","metric":"likes","ts":"9999-12-31T23:59:59-14:00"}]',
        id="ts-year-9999-minus-14h",
    ),
    pytest.param(
        JSON,
        b"[" + _event_bytes(influencer_id='"@@"').replace(b"@@", b"\xff\xfe") + b"]",
        id="non-utf8-in-string",
    ),
    pytest.param(
        NDJSON,
        _event_bytes(text='"caf@"').replace(b"@", b"\xe9"),
        id="latin1-in-string-ndjson",
    ),
    pytest.param(JSON, b"\xff\xfe\x00[\x00]", id="non-utf8-body"),
    pytest.param(JSON, b"", id="empty-json"),
    pytest.param(NDJSON, b"", id="empty-ndjson"),
    pytest.param(NDJSON, b"\n \n\t\n", id="blank-ndjson"),
    pytest.param(JSON, b"null", id="null"),
    pytest.param(JSON, b"[]", id="empty-array"),
    pytest.param(JSON, b"{}", id="empty-object"),
    pytest.param(JSON, b"[null, [], {}, 1, true]", id="array-of-junk"),
    pytest.param(JSON, b'"just a string"', id="string"),
    pytest.param(JSON, b"12345", id="number"),
    pytest.param(NDJSON, b"null\n[]\n{}\n", id="ndjson-of-junk"),
    pytest.param(JSON, b"[" + _event_bytes() + b",]", id="trailing-comma"),
    pytest.param(JSON, b"\x00" * 64, id="nul-bytes"),
]


def send(
    srv: LiveServer, key: str, path: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """One request on its own connection, so one answer can never spoil the next."""
    with srv.client(key) as client:
        return client.post(path, content=body, headers=headers)


def assert_clean_4xx(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["x-request-id"]
    error = response.json()["error"]
    assert error["code"] in {"invalid_input", "all_events_rejected", "payload_too_large"}
    assert error["message"]
    if error["code"] == "all_events_rejected":
        assert response.json()["accepted"] == 0
        assert response.json()["rejected"], "every rejection is reported"


@pytest.mark.parametrize(("media", "body"), EVENTS_CASES)
def test_hostile_ingest_bodies_get_4xx(shared_server: LiveServer, media: str, body: bytes) -> None:
    srv = shared_server
    key = srv.keys["acme"].ingest

    plain = send(srv, key, "/v1/events", body, {"Content-Type": media})
    assert_clean_4xx(plain)
    zipped = send(
        srv,
        key,
        "/v1/events",
        gzip.compress(body),
        {"Content-Type": media, "Content-Encoding": "gzip"},
    )
    assert_clean_4xx(zipped)
    assert accepted_total(srv) == 0


TRACK_CASES = [
    pytest.param(
        f'{{"influencer_id":"a","properties":{deep_object()}}}'.encode(),
        id="deeply-nested-properties",
    ),
    pytest.param(b'{"influencer_id":"\xff"}', id="non-utf8-in-string"),
    pytest.param(deep_array(), id="deeply-nested-array"),
    pytest.param(b'{"influencer_id":"a","value":1e999}', id="value-1e999"),
    pytest.param(b'{"influencer_id":"a","value":NaN}', id="value-NaN"),
    pytest.param(b'{"influencer_id":"a","value":"5"}', id="value-string"),
    pytest.param(b'{"influencer_id":"a","ts":12}', id="ts-number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="empty-array"),
    pytest.param(b"{}", id="empty-object"),
    pytest.param(b"[" + b'{"influencer_id":"a"}' + b"]", id="array-of-one"),
    pytest.param(b"   ", id="blank"),
    pytest.param(b"\xff\xfe", id="non-utf8-body"),
]


@pytest.mark.parametrize("body", TRACK_CASES)
def test_hostile_track_bodies_get_4xx(shared_server: LiveServer, body: bytes) -> None:
    srv = shared_server
    response = send(srv, srv.keys["acme"].ingest, "/v1/track/likes", body, {"Content-Type": JSON})

    assert_clean_4xx(response)
    assert accepted_total(srv) == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/keys", b"null"),
        ("POST", "/v1/admin/keys", b"[]"),
        ("POST", "/v1/admin/keys", b'{"scopes": "ingest"}'),
        ("POST", "/v1/admin/keys", b'{"scopes": [1, 2]}'),
        ("POST", "/v1/admin/keys", b'{"scopes": ["ingest"], "name": "' + b"n" * 500 + b'"}'),
        ("POST", "/v1/admin/keys", b'{"scopes": ["\xff"]}'),
        ("POST", "/v1/admin/metrics", b'{"name": null}'),
        ("POST", "/v1/admin/metrics", b'{"name": "' + b"m" * 100 + b'"}'),
        ("POST", "/v1/admin/metrics", b'{"name": "a", "kind": 5}'),
        ("POST", "/v1/admin/metrics", deep_array(DEPTH)),
        ("DELETE", "/v1/admin/keys/%00%ff", b""),
    ],
)
def test_hostile_admin_bodies_get_4xx(
    shared_server: LiveServer, method: str, path: str, body: bytes
) -> None:
    srv = shared_server
    with srv.client(srv.keys["globex"].admin) as client:
        response = client.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        keys = client.get("/v1/admin/keys").json()["data"]
        metrics = client.get("/v1/admin/metrics").json()["custom"]

    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.json()["error"]["code"]
    assert len(keys) == 3
    assert metrics == []
