"""Pages of the query API: opaque cursors bound to their query, and page limits.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from hypemeter.errors import InvalidInput


def encode_cursor(scope: str, after: Sequence[Any]) -> str:
    """An opaque cursor: the last row's sort key, bound to the query it came from."""
    body = json.dumps({"q": _scope_tag(scope), "a": list(after)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, scope: str) -> list[Any]:
    bad = InvalidInput("cursor is not valid for this query; start again without it", field="cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(body, dict) or body.get("q") != _scope_tag(scope):
        raise bad
    after = body.get("a")
    if not isinstance(after, list):
        raise bad
    return after


def decode_id_cursor(cursor: str | None, scope: str) -> str | None:
    """The id after which a page of an id-ordered list starts (None: from the start)."""
    if not cursor:
        return None
    position = decode_cursor(cursor, scope)
    if len(position) != 1 or not isinstance(position[0], str):
        raise InvalidInput("cursor is not valid for this query", field="cursor")
    return position[0]


def _scope_tag(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def page_after(
    rows: Sequence[Any], key: Any, after: Sequence[Any] | None, limit: int
) -> tuple[list[Any], list[Any] | None, int]:
    """The page of ``rows`` (sorted by ``key``) after a cursor position.

    Returns the page, the position after it (None on the last page) and how
    many rows come before the page.
    """
    start = 0
    if after is not None:
        target = tuple(after)
        try:
            start = next((i for i, row in enumerate(rows) if tuple(key(row)) > target), len(rows))
        except TypeError:
            raise InvalidInput("cursor is not valid for this query", field="cursor") from None
    page = list(rows[start : start + limit])
    more = start + limit < len(rows)
    return page, (list(key(page[-1])) if more and page else None), start


MAX_LIMIT = 1000


def check_limit(limit: int) -> None:
    """Raise unless ``limit`` rows make a page (1 to MAX_LIMIT)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")


def value_key_position(position: list[Any]) -> tuple[float, str]:
    """A (value, key) cursor position, checked."""
    try:
        value, key = position
        return float(value), str(key)
    except (TypeError, ValueError):
        raise InvalidInput("cursor is not valid for this query", field="cursor") from None
