"""Rows of an answer held as columns, written to JSON without a dict per row.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec


class Columns:
    """Rows of an answer held as columns (``keys[i]`` names ``columns[i]``).

    Iterating gives one dict per row; the JSON encoder writes ``json()``
    instead: one formatted line per row, no dict per row.
    """

    __slots__ = ("columns", "keys")

    def __init__(self, keys: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
        self.keys = tuple(keys)
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in zip(*self.columns, strict=True):
            yield dict(zip(self.keys, row, strict=True))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(zip(self.keys, (column[index] for column in self.columns), strict=True))

    def json(self) -> bytes:
        rows = len(self)
        if not rows:
            return b"[]"
        # Key prefixes and cells interleaved in one list, joined once: no per-row formatting.
        width = 2 * len(self.keys)
        parts: list[bytes] = [b""] * (rows * width)
        for i, (key, column) in enumerate(zip(self.keys, self.columns, strict=True)):
            parts[2 * i :: width] = [(b"},{" if i == 0 else b",") + _JSON(key) + b":"] * rows
            parts[2 * i + 1 :: width] = _json_cells(column)
        parts[0] = b"[{" + _JSON(self.keys[0]) + b":"
        return b"".join(parts) + b"}]"


_JSON = msgspec.json.encode


def _json_cells(column: Sequence[Any]) -> list[bytes]:
    """Each value's JSON: one encoded array split at its commas when none is inside a value."""
    if not len(column):
        return []
    encoded = _JSON(column)
    if encoded.count(b",") == len(column) - 1:
        return encoded[1:-1].split(b",")
    return [_JSON(v) for v in column]
