"""Reading platform JSON safely: decoded as plain objects, read through typed accessors.

Platforms send ids as strings or numbers and omit fields freely, so every read
says what it accepts and answers ``None`` for anything else.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

import msgspec

from hypemeter.connectors.webhooks.model import WebhookMalformed
from hypemeter.events.model import to_epoch_us

Obj = Mapping[str, object]

US_PER_S = 1_000_000
US_PER_MS = 1_000
# Unix seconds stay below 1e11 until the year 5138; larger values are milliseconds.
_MS_THRESHOLD = 100_000_000_000
_FRACTION = re.compile(r"(\.\d{6})\d+")


def decode_object(body: bytes, *, what: str) -> Obj:
    """The body as a JSON object; raises WebhookMalformed naming ``what`` otherwise."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise WebhookMalformed(f"{what} is not valid JSON: {error}") from None
    obj = as_obj(decoded)
    if obj is None:
        raise WebhookMalformed(f"{what} is not a JSON object")
    return obj


def as_obj(value: object) -> Obj | None:
    if isinstance(value, dict):
        return value
    return None


def obj_of(obj: Obj | None, key: str) -> Obj | None:
    return None if obj is None else as_obj(obj.get(key))


def list_of(obj: Obj | None, key: str) -> list[object]:
    value = None if obj is None else obj.get(key)
    return value if isinstance(value, list) else []


def objs_of(obj: Obj | None, key: str) -> list[Obj]:
    return [item for item in map(as_obj, list_of(obj, key)) if item is not None]


def str_of(obj: Obj | None, key: str) -> str | None:
    value = None if obj is None else obj.get(key)
    return value if isinstance(value, str) and value else None


def id_of(obj: Obj | None, key: str) -> str | None:
    """An identifier sent as a non-empty string or as an integer."""
    value = None if obj is None else obj.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


def int_of(obj: Obj | None, key: str) -> int | None:
    """An integer sent as a number or as a string of digits."""
    value = None if obj is None else obj.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def number_of(obj: Obj | None, key: str) -> float | None:
    value = None if obj is None else obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def unix_us(value: int) -> int:
    """Microseconds from a Unix time in seconds, or in milliseconds when it is that large."""
    return value * US_PER_MS if value >= _MS_THRESHOLD else value * US_PER_S


def fragment(value: object) -> str:
    """A JSON fragment as text, for dead letters."""
    return msgspec.json.encode(value).decode()


def rfc3339_us(text: str | None) -> int | None:
    """Microseconds since the epoch of an RFC 3339 time with an offset, else None.

    Accepts a ``Z`` suffix and more than six fractional digits (Twitch sends
    nanoseconds), which ``fromisoformat`` alone does not.
    """
    if not text:
        return None
    cleaned = _FRACTION.sub(r"\1", text.strip())
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return to_epoch_us(moment)
