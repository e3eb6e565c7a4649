"""Ingest bodies: media types, gzip, JSON arrays and NDJSON, per-event errors."""

from __future__ import annotations

import gzip

import pytest

from hypemeter.errors import InvalidInput, PayloadTooLarge, Rejection, UnsupportedMediaType
from hypemeter.events.codec import (
    BodyLimits,
    Decoders,
    decode_items,
    decompress,
    media_type,
    split_items,
)
from hypemeter.events.model import EventIn

LIMITS = BodyLimits(max_body_bytes=1_000_000, max_events=100, max_event_bytes=1024)
EVENT = b'{"influencer_id":"inf-1","platform":"x","metric":"likes","ts":"2026-11-20T14:00:00Z"}'
OTHER = EVENT.replace(b"inf-1", b"inf-2")
DECODERS = Decoders.of(EventIn)


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("application/json", "json"),
        ("Application/JSON; charset=utf-8", "json"),
        ("text/json", "json"),
        ("application/x-ndjson", "ndjson"),
        ("application/ndjson", "ndjson"),
        ("application/jsonl; charset=utf-8", "ndjson"),
        ("application/x-jsonlines", "ndjson"),
    ],
)
def test_media_type_accepts_json_and_ndjson(header: str, kind: str) -> None:
    assert media_type(header) == kind


@pytest.mark.parametrize(
    ("header", "shown"), [(None, "none"), ("", "none"), ("text/plain", "text/plain")]
)
def test_media_type_rejection_names_the_header(header: str | None, shown: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        media_type(header)
    assert caught.value.field == "Content-Type"
    assert f"Content-Type {shown} is not accepted" in caught.value.message
    assert "application/x-ndjson" in caught.value.message


@pytest.mark.parametrize("encoding", [None, "identity", " Identity "])
def test_identity_encoding_returns_the_body(encoding: str | None) -> None:
    assert decompress(EVENT, encoding, max_bytes=10) == EVENT


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", " GZIP "])
def test_gzip_is_inflated(encoding: str) -> None:
    body = b"\n".join([EVENT] * 50)
    assert decompress(gzip.compress(body), encoding, max_bytes=len(body)) == body


def corrupted_crc(body: bytes) -> bytes:
    packed = bytearray(gzip.compress(body))
    packed[-8] ^= 0xFF  # the CRC-32 in the trailer
    return bytes(packed)


@pytest.mark.parametrize(
    ("packed", "says"),
    [
        (EVENT, "not valid gzip"),
        (corrupted_crc(EVENT), "not valid gzip"),
        (gzip.compress(EVENT * 20)[:-1], "truncated"),
        (gzip.compress(EVENT * 20)[:-8], "truncated"),
        (gzip.compress(EVENT * 20)[:-30], "not valid gzip"),
        (b"", "truncated"),
    ],
    ids=["not-gzip", "bad-crc", "cut-1", "cut-8", "cut-30", "empty"],
)
def test_bad_or_truncated_gzip_is_invalid_input(packed: bytes, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decompress(packed, "gzip", max_bytes=LIMITS.max_body_bytes)
    assert caught.value.field == "body"
    assert says in caught.value.message


def test_zip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge) as caught:
        decompress(bomb, "gzip", max_bytes=1_000_000)
    assert caught.value.limit == "max_body_bytes"
    assert caught.value.value == 1_000_000
    assert caught.value.details() == {"limit": "max_body_bytes", "max": 1_000_000}


def test_inflated_body_of_exactly_the_limit_is_accepted() -> None:
    body = b"a" * 4096
    assert decompress(gzip.compress(body), "gzip", max_bytes=4096) == body
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(body), "gzip", max_bytes=4095)


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br"])
def test_unknown_encoding_is_unsupported(encoding: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        decompress(EVENT, encoding, max_bytes=LIMITS.max_body_bytes)
    assert caught.value.field == "Content-Encoding"
    assert encoding in caught.value.message


def test_multi_member_gzip_is_inflated_whole() -> None:
    first, second = EVENT + b"\n", EVENT.replace(b"inf-1", b"inf-2") + b"\n"
    body = gzip.compress(first) + gzip.compress(second)
    assert decompress(body, "gzip", max_bytes=LIMITS.max_body_bytes) == first + second


def test_trailing_bytes_after_gzip_are_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        decompress(gzip.compress(EVENT) + b"garbage", "gzip", max_bytes=1000)


def parse(
    body: bytes, kind: str, limits: BodyLimits = LIMITS
) -> tuple[list[tuple[int, EventIn]], list[Rejection]]:
    """Split and decode a body the way ingest does."""
    return decode_items(split_items(body, kind, limits), DECODERS, limits.max_event_bytes)


def indices(decoded: list[tuple[int, EventIn]]) -> list[int]:
    return [index for index, _ in decoded]


def test_ndjson_index_is_the_zero_based_line_blank_lines_counted() -> None:
    body = EVENT + b"\n\n\n" + OTHER + b"\n\n" + EVENT + b"\n"
    assert split_items(body, "ndjson", LIMITS).count == 3
    decoded, rejected = parse(body, "ndjson")
    assert rejected == []
    assert indices(decoded) == [0, 3, 5]
    assert [event.influencer_id for _, event in decoded] == ["inf-1", "inf-2", "inf-1"]


def test_ndjson_rejection_index_is_the_line_with_crlf_and_blank_lines() -> None:
    body = b"\r\n".join([EVENT, b"", b"   ", OTHER, b"{", b"", EVENT[:-1] + b',"x":1}'])
    decoded, rejected = parse(body, "ndjson")
    assert indices(decoded) == [0, 3]
    assert [(r.index, r.field) for r in rejected] == [(4, None), (6, "x")]


def test_json_array_index_is_the_position() -> None:
    decoded, rejected = parse(b"[\n " + EVENT + b",\n " + OTHER + b"\n]", "json")
    assert rejected == []
    assert [(i, e.influencer_id) for i, e in decoded] == [(0, "inf-1"), (1, "inf-2")]
    decoded, rejected = parse(b"[" + EVENT + b", 7, " + OTHER + b"]", "json")
    assert indices(decoded) == [0, 2]
    assert [r.index for r in rejected] == [1]


def test_single_json_object_is_one_event() -> None:
    assert split_items(EVENT, "json", LIMITS).count == 1
    decoded, rejected = parse(EVENT, "json")
    assert rejected == []
    assert [(i, e.influencer_id) for i, e in decoded] == [(0, "inf-1")]


def test_malformed_json_array_names_line_and_column() -> None:
    body = b"[\n" + EVENT + b',\n  {"influencer_id": }\n]'
    with pytest.raises(InvalidInput) as caught:
        split_items(body, "json", LIMITS)
    assert caught.value.field == "body"
    assert "line 3, column 21" in caught.value.message


def test_truncated_json_array_names_line_and_column() -> None:
    body = b"[\n" + EVENT + b",\n" + EVENT[:20]
    with pytest.raises(InvalidInput) as caught:
        split_items(body, "json", LIMITS)
    assert "line 3" in caught.value.message


@pytest.mark.parametrize("body", [b'"likes"', b"42", b"", b"   "])
def test_json_body_that_is_no_array_or_object_is_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        split_items(body, "json", LIMITS)
    assert caught.value.field == "body"
    assert "not valid JSON" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("json", b"[" + b",".join([EVENT] * 3) + b"]"),
        ("ndjson", b"\n".join([EVENT] * 3)),
        ("ndjson", b"\n\n".join([EVENT] * 3) + b"\n"),
    ],
)
def test_too_many_events_name_the_limit(kind: str, body: bytes) -> None:
    assert split_items(body, kind, BodyLimits(1_000_000, 3, 1024)).count == 3
    with pytest.raises(PayloadTooLarge) as caught:
        split_items(body, kind, BodyLimits(1_000_000, 2, 1024))
    assert caught.value.limit == "max_events_per_request"
    assert caught.value.value == 2
    assert "3 events exceed max_events_per_request (2)" in caught.value.message


def test_blank_lines_do_not_count_towards_the_event_limit() -> None:
    body = b"\n \n\r\n".join([EVENT, EVENT]) + b"\n\n"
    assert split_items(body, "ndjson", BodyLimits(1_000_000, 2, 1024)).count == 2


@pytest.mark.parametrize(("body", "kind"), [(b"", "ndjson"), (b"\n\n", "ndjson"), (b"[]", "json")])
def test_empty_body_has_no_events(body: bytes, kind: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        split_items(body, kind, LIMITS)
    assert caught.value.field == "body"
    assert "no events" in caught.value.message


@pytest.mark.parametrize("body", [b" ", b"\n \n", b"\r\n\r\n"])
def test_whitespace_only_ndjson_body_has_no_events(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="no events"):
        split_items(body, "ndjson", LIMITS)


@pytest.mark.parametrize("kind", ["json", "ndjson"])
def test_per_event_errors_name_the_field(kind: str) -> None:
    events = [
        EVENT,
        EVENT.replace(b'"inf-1"', b"42"),
        EVENT[:-1] + b',"colour":"red"}',
        EVENT[:-1] + b',"tags":["a",7]}',
        EVENT.replace(b"2026-11-20T14:00:00Z", b"yesterday"),
        EVENT[:-1] + b',"value":"many"}',
    ]
    body = b"[" + b",".join(events) + b"]" if kind == "json" else b"\n".join(events)
    decoded, rejected = parse(body, kind)
    assert [(i, e.influencer_id) for i, e in decoded] == [(0, "inf-1")]
    assert [(r.index, r.field) for r in rejected] == [
        (1, "influencer_id"),
        (2, "colour"),
        (3, "tags"),
        (4, "ts"),
        (5, "value"),
    ]
    assert "got `int`" in rejected[0].error
    assert "unknown field" in rejected[1].error


def test_malformed_ndjson_line_is_rejected_alone() -> None:
    decoded, rejected = parse(EVENT + b"\n" + EVENT[:-1] + b"\n" + OTHER, "ndjson")
    assert indices(decoded) == [0, 2]
    assert [(r.index, r.field) for r in rejected] == [(1, None)]
    assert rejected[0].error.startswith("not valid JSON")


@pytest.mark.parametrize("kind", ["json", "ndjson"])
def test_oversize_event_is_rejected_naming_the_limit(kind: str) -> None:
    big = EVENT[:-1] + b',"text":"' + b"x" * 2000 + b'"}'
    body = b"[" + EVENT + b"," + big + b"]" if kind == "json" else EVENT + b"\n" + big
    decoded, rejected = parse(body, kind)
    assert indices(decoded) == [0]
    assert [(r.index, r.field) for r in rejected] == [(1, None)]
    assert f"event is {len(big)} bytes" in rejected[0].error
    assert "max_event_bytes is 1024" in rejected[0].error


def test_two_events_on_one_ndjson_line_are_one_bad_item() -> None:
    body = EVENT + b" " + EVENT + b"\n" + OTHER + b"\n \n"
    decoded, rejected = parse(body, "ndjson")
    assert [(i, e.influencer_id) for i, e in decoded] == [(1, "inf-2")]
    assert [r.index for r in rejected] == [0]
