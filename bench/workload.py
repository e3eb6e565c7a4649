"""The PERF.md workload as NDJSON, from the seeded ``hypemeter.simulate.workload.Workload``.

The events are generated once per ``python -m bench`` into a temporary NDJSON
file (the yardsticks read that same file). Their event ids carry a placeholder
``id_prefix`` (``TEMPLATE``); the load client replaces it with a prefix unique
to each run, and to each pass over the file, so no two requests of a session
ever share an event id except the workload's own ~1% retried duplicates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from hypemeter.simulate.workload import METRIC_MIX, PLATFORM_CHOICES, US, Workload

TEMPLATE = b"@RUN@"
SEED = 20_261_120
INFLUENCERS = 1000
CONTENT_ITEMS = 20_000
SPAN_US = 7 * 24 * 3600 * US
DUPLICATE_RATE = 0.01
LATE_RATE = 0.02
INVALID_RATE = 0.005
CHUNK = 50_000

_METRICS = frozenset(m for m, _ in METRIC_MIX)
_PLATFORMS = frozenset(PLATFORM_CHOICES)


@dataclass(frozen=True, slots=True)
class Pool:
    """The generated NDJSON file and what it holds."""

    path: Path
    events: int
    size_bytes: int
    seconds: float


def generate_pool(path: Path, events: int, *, seed: int = SEED) -> Pool:
    """Write ``events`` events, timestamps spread over the 7 days ending now, as NDJSON."""
    started = time.perf_counter()
    end_us = time.time_ns() // 1000
    start_us = end_us - SPAN_US
    workload = Workload(
        seed=seed,
        influencers=INFLUENCERS,
        content_items=CONTENT_ITEMS,
        start_us=start_us,
        span_us=SPAN_US,
        duplicate_rate=DUPLICATE_RATE,
        late_rate=LATE_RATE,
        invalid_rate=INVALID_RATE,
        id_prefix=TEMPLATE.decode(),
    )
    encode = msgspec.json.Encoder().encode
    with path.open("wb") as out:
        for first in range(0, events, CHUNK):
            count = min(CHUNK, events - first)
            chunk_start = start_us + SPAN_US * first // events
            chunk_end = start_us + SPAN_US * (first + count) // events
            batch = workload.events(count, start_us=chunk_start, end_us=chunk_end)
            out.write(b"".join(encode(event) + b"\n" for event in batch))
    return Pool(path, events, path.stat().st_size, time.perf_counter() - started)


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def batch_templates(lines: list[bytes], batch_events: int) -> list[bytes]:
    """NDJSON bodies of ``batch_events`` lines, ids still carrying ``TEMPLATE``."""
    return [
        b"\n".join(lines[first : first + batch_events]) + b"\n"
        for first in range(0, len(lines), batch_events)
    ]


def with_prefix(template: bytes, prefix: str) -> bytes:
    return template.replace(TEMPLATE, prefix.encode())


def is_valid(event: dict[str, object]) -> bool:
    """False for the events the workload spoiled on purpose (no ts, unknown metric/platform)."""
    return "ts" in event and event.get("metric") in _METRICS and event.get("platform") in _PLATFORMS


def track_templates(lines: list[bytes], limit: int) -> list[tuple[str, bytes]]:
    """Up to ``limit`` (metric, JSON body) pairs for ``POST /v1/track/{metric}``.

    The body is the event without its metric (the path names it), as an app SDK sends it.
    """
    decode = msgspec.json.Decoder(dict[str, object]).decode
    encode = msgspec.json.Encoder().encode
    out: list[tuple[str, bytes]] = []
    for line in lines:
        event = decode(line)
        if not is_valid(event):
            continue
        metric = str(event.pop("metric"))
        out.append((metric, encode(event)))
        if len(out) >= limit:
            break
    return out
