"""Decoding of ingest bodies: gzip, JSON arrays and NDJSON, with per-event errors.

Pure: bytes in, events and rejections out.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

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


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """The limits of ingest the settings set: of a body, and of the times events carry."""

    max_body_bytes: int
    max_events: int
    max_event_bytes: int
    retention_days: int
    max_future_seconds: int

    def body(self) -> BodyLimits:
        return BodyLimits(self.max_body_bytes, self.max_events, self.max_event_bytes)


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
    if not body:
        raise InvalidInput("body is not valid gzip: the stream is truncated (empty)", field="body")
    out = bytearray()
    data = body
    # A gzip stream may hold several members (concatenated files): inflate them all.
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(data, max_bytes + 1 - len(out))
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
        data = inflater.unused_data
    return bytes(out)


def field_of(error: msgspec.MsgspecError) -> str | None:
    """The event field a msgspec error is about, when it names one."""
    text = str(error)
    match = _FIELD_AT.search(text) or _FIELD_NAMED.search(text)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class Decoders(Generic[T]):
    """msgspec decoders of one event type: one event, and a whole JSON array."""

    item: msgspec.json.Decoder[T]
    array: msgspec.json.Decoder[list[T]]

    @classmethod
    def of(cls, event_type: type[T]) -> Decoders[T]:
        return cls(msgspec.json.Decoder(event_type), msgspec.json.Decoder(list[event_type]))  # type: ignore[valid-type]


@dataclass(frozen=True, slots=True)
class Items:
    """A body cut into events: NDJSON lines, JSON array elements, or one JSON object."""

    kind: str
    body: bytes
    parts: list[bytes]
    count: int


def split_items(body: bytes, kind: str, limits: BodyLimits) -> Items:
    """Cut a body into events and enforce the request limits (cheap: no event decoded)."""
    if kind == "ndjson":
        lines = body.split(b"\n")
        items = Items("ndjson", body, lines, sum(1 for line in lines if line.strip()))
    else:
        items = _split_json(body)
    if not items.count:
        raise InvalidInput("body contains no events", field="body")
    if items.count > limits.max_events:
        raise PayloadTooLarge(
            f"{items.count} events exceed max_events_per_request ({limits.max_events})",
            limit="max_events_per_request",
            value=limits.max_events,
        )
    return items


def _split_json(body: bytes) -> Items:
    try:
        parsed = msgspec.json.decode(body, type=list[msgspec.Raw] | dict[str, msgspec.Raw])
    except msgspec.DecodeError as exc:
        raise InvalidInput(_located(body, exc), field="body") from exc
    except RecursionError as exc:
        raise InvalidInput("body is not valid JSON: it nests too deeply", field="body") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"body is not valid UTF-8 at byte {exc.start}", field="body") from exc
    if isinstance(parsed, dict):
        return Items("object", body, [body], 1)
    return Items("array", body, [bytes(raw) for raw in parsed], len(parsed))


def decode_items(
    items: Items, decoders: Decoders[T], max_event_bytes: int
) -> tuple[list[tuple[int, T]], list[Rejection]]:
    """Decode every event, each with its index, rejecting bad ones one by one.

    The whole body is first decoded in one C call; only when that fails (a bad
    or oversize event) is each event decoded on its own to say which and why.
    """
    if max(map(len, items.parts)) <= max_event_bytes:
        fast = _decode_whole(items, decoders)
        if fast is not None:
            return list(enumerate(fast)), []
    return _decode_each(_indexed(items), decoders.item.decode, max_event_bytes)


def _decode_whole(items: Items, decoders: Decoders[T]) -> list[T] | None:
    try:
        if items.kind == "array":
            return decoders.array.decode(items.body)
        if items.kind == "object":
            return [decoders.item.decode(items.body)]
        # Only when every line holds something (a final newline aside) does
        # "one value per line" follow from the counts matching.
        lines = items.parts
        if items.count != len(lines) - (lines[-1] == b""):
            return None
        decoded = decoders.item.decode_lines(items.body)
    except (msgspec.MsgspecError, RecursionError, UnicodeDecodeError):
        return None
    return decoded if len(decoded) == items.count else None


def _indexed(items: Items) -> list[tuple[int, bytes]]:
    if items.kind == "ndjson":
        return [(n, line) for n, line in enumerate(items.parts) if line.strip()]
    return list(enumerate(items.parts))


def _located(body: bytes, exc: msgspec.DecodeError) -> str:
    match = _BYTE_AT.search(str(exc))
    if match is not None:
        offset = int(match.group(1))
    elif "truncated" in str(exc):
        offset = len(body)
    else:
        return f"body is not valid JSON: {exc}"
    line = body.count(b"\n", 0, offset) + 1
    column = offset - (body.rfind(b"\n", 0, offset) + 1) + 1
    return f"body is not valid JSON at line {line}, column {column}: {exc}"


def _decode_each(
    items: list[tuple[int, bytes]],
    decode: Callable[[bytes], T],
    max_event_bytes: int,
) -> tuple[list[tuple[int, T]], list[Rejection]]:
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
        except RecursionError:
            rejected.append(Rejection(index, None, "not valid JSON: it nests too deeply"))
        except UnicodeDecodeError as exc:
            rejected.append(Rejection(index, None, f"not valid UTF-8 at byte {exc.start}"))
    return decoded, rejected
