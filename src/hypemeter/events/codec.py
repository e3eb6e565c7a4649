"""Decoding of ingest bodies: gzip, JSON arrays and NDJSON, with per-event errors.

Pure: bytes in, events and rejections out.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from hypemeter.errors import InvalidInput, PayloadTooLarge, Rejection, UnsupportedMediaType

JSON_TYPES = frozenset({"application/json", "text/json"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
ALLOWED_TYPES = "application/json, application/x-ndjson"

_FIELD_AT = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_FIELD_NAMED = re.compile(r"field `([^`]+)`")
_BYTE_AT = re.compile(r"\(byte (\d+)\)")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_body_bytes: int
    max_events: int
    max_event_bytes: int


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header; raises UnsupportedMediaType."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in JSON_TYPES:
        return "json"
    if kind in NDJSON_TYPES:
        return "ndjson"
    shown = kind or "none"
    raise UnsupportedMediaType(
        f"Content-Type {shown} is not accepted; use {ALLOWED_TYPES}", field="Content-Type"
    )


def decompress(body: bytes, content_encoding: str | None, *, max_bytes: int) -> bytes:
    """Undo Content-Encoding; the result never exceeds ``max_bytes`` (zip bombs stop early)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in {"gzip", "x-gzip"}:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding} is not accepted; use gzip or none",
            field="Content-Encoding",
        )
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid gzip: {exc}", field="body") from exc
    if len(out) > max_bytes:
        raise PayloadTooLarge(
            f"uncompressed body exceeds max_body_bytes ({max_bytes} bytes)",
            limit="max_body_bytes",
            value=max_bytes,
        )
    if not inflater.eof:
        raise InvalidInput("body is not valid gzip: the stream is truncated", field="body")
    return out


def field_of(error: msgspec.MsgspecError) -> str | None:
    """The event field a msgspec error is about, when it names one."""
    text = str(error)
    match = _FIELD_AT.search(text) or _FIELD_NAMED.search(text)
    return match.group(1) if match else None


def split_items(body: bytes, kind: str, limits: BodyLimits) -> list[tuple[int, bytes]]:
    """Cut a body into (index, raw event) pairs, enforcing the request limits.

    The index is the position in a JSON array, or the 0-based line of NDJSON.
    """
    if kind == "ndjson":
        items = [(number, line) for number, line in enumerate(body.split(b"\n")) if line.strip()]
    else:
        items = _split_json(body)
    if not items:
        raise InvalidInput("body contains no events", field="body")
    if len(items) > limits.max_events:
        raise PayloadTooLarge(
            f"{len(items)} events exceed max_events_per_request ({limits.max_events})",
            limit="max_events_per_request",
            value=limits.max_events,
        )
    return items


def _split_json(body: bytes) -> list[tuple[int, bytes]]:
    try:
        parsed = msgspec.json.decode(body, type=list[msgspec.Raw] | dict[str, msgspec.Raw])
    except msgspec.DecodeError as exc:
        raise InvalidInput(_located(body, exc), field="body") from exc
    if isinstance(parsed, dict):
        return [(0, body)]
    return [(index, bytes(raw)) for index, raw in enumerate(parsed)]


def _located(body: bytes, exc: msgspec.DecodeError) -> str:
    match = _BYTE_AT.search(str(exc))
    if match is None:
        return f"body is not valid JSON: {exc}"
    offset = int(match.group(1))
    line = body.count(b"\n", 0, offset) + 1
    column = offset - (body.rfind(b"\n", 0, offset) + 1) + 1
    return f"body is not valid JSON at line {line}, column {column}: {exc}"


def decode_items(
    items: list[tuple[int, bytes]],
    decode: Callable[[bytes], T],
    max_event_bytes: int,
) -> tuple[list[tuple[int, T]], list[Rejection]]:
    """Decode each raw event on its own so one bad event never sinks the batch."""
    decoded: list[tuple[int, T]] = []
    rejected: list[Rejection] = []
    for index, raw in items:
        if len(raw) > max_event_bytes:
            rejected.append(
                Rejection(
                    index,
                    None,
                    f"event is {len(raw)} bytes; max_event_bytes is {max_event_bytes}",
                )
            )
            continue
        try:
            decoded.append((index, decode(raw)))
        except msgspec.ValidationError as exc:
            rejected.append(Rejection(index, field_of(exc), str(exc)))
        except msgspec.DecodeError as exc:
            rejected.append(Rejection(index, None, f"not valid JSON: {exc}"))
    return decoded, rejected
