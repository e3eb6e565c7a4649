"""The yardsticks: what this machine does with the same NDJSON without Hypemeter.

- DuckDB ``read_json`` + ``GROUP BY influencer_id, metric`` over the file: the
  aggregation's physical limit (DuckDB uses every core).
- msgspec decoding each line into a Struct, on one core, storing nothing: the
  decode limit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any

import duckdb
import msgspec

GROUP_BY = (
    "SELECT influencer_id, metric, count(*) AS events, sum(coalesce(value, 1)) AS total "
    "FROM read_json('{path}', format = 'newline_delimited') GROUP BY influencer_id, metric"
)


class WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The event schema as it arrives on the wire (README), with no validation beyond types."""

    influencer_id: str
    platform: str
    metric: str
    ts: dt.datetime
    event_id: str | None = None
    content_id: str | None = None
    campaign_id: str | None = None
    value: float = 1.0
    kind: str = "delta"
    user_id: str | None = None
    text: str | None = None
    tags: list[str] | None = None
    variant: str | None = None
    properties: dict[str, Any] | None = None


def duckdb_group_by(path: Path) -> tuple[float, int]:
    """Events per second of read_json + GROUP BY over ``path``, and the events it counted."""
    con = duckdb.connect()
    try:
        started = time.perf_counter()
        rows = con.execute(GROUP_BY.format(path=str(path).replace("'", "''"))).fetchall()
        seconds = time.perf_counter() - started
    finally:
        con.close()
    events = sum(int(row[2]) for row in rows)
    return events / seconds, events


def msgspec_decode(path: Path) -> tuple[float, int]:
    """Events per second of splitting the NDJSON and decoding each line; invalid lines count."""
    data = path.read_bytes()
    decode = msgspec.json.Decoder(WireEvent).decode
    started = time.perf_counter()
    events = 0
    for line in data.split(b"\n"):
        if not line:
            continue
        events += 1
        with contextlib.suppress(msgspec.ValidationError):
            decode(line)
    return events / (time.perf_counter() - started), events
