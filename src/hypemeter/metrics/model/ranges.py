"""Time in the query API: instants, ranges, UTC buckets and the covers that read them.

Pure data and arithmetic; nothing here does I/O. Every timestamp is an integer
count of microseconds since the Unix epoch (UTC).

A range ``[start, end)`` is answered by a *cover*: disjoint pieces, each read
from the coarsest rollup grain that fits whole buckets inside it, with the
ragged ends read from raw events. Counters are sums, so any cover of a range
gives the same total as the raw events; gauge readings merge by taking the
first or last reading, which any cover preserves too.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hypemeter.errors import InvalidInput

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
AUTO_TARGET_BUCKETS = 500
MAX_BUCKETS = 10_000
DEFAULT_PERIOD = "24h"


class Grain(enum.StrEnum):
    """Bucket widths, UTC-aligned."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def us(self) -> int:
        return _GRAIN_US[self]


_GRAIN_US = {Grain.MINUTE: MINUTE_US, Grain.HOUR: HOUR_US, Grain.DAY: DAY_US}
FINEST_FIRST = (Grain.MINUTE, Grain.HOUR, Grain.DAY)


def floor_to(ts_us: int, width_us: int) -> int:
    return ts_us - ts_us % width_us


def ceil_to(ts_us: int, width_us: int) -> int:
    return -floor_to(-ts_us, width_us)


# -- covers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Piece:
    """A part of a range read from one source: a rollup grain, or raw events (None)."""

    grain: Grain | None
    start_us: int
    end_us: int


def cover(start_us: int, end_us: int, grains: Sequence[Grain]) -> list[Piece]:
    """Disjoint pieces that together are exactly ``[start_us, end_us)``, in time order.

    Each piece uses the coarsest of ``grains`` whose whole buckets fit; what is
    left at either end falls to finer grains and finally to raw events.
    """
    ordered = sorted(set(grains), key=lambda g: g.us, reverse=True)
    return _cover(start_us, end_us, ordered)


def _cover(start_us: int, end_us: int, grains: list[Grain]) -> list[Piece]:
    if start_us >= end_us:
        return []
    if not grains:
        return [Piece(None, start_us, end_us)]
    grain, finer = grains[0], grains[1:]
    inner_start, inner_end = ceil_to(start_us, grain.us), floor_to(end_us, grain.us)
    if inner_start >= inner_end:
        return _cover(start_us, end_us, finer)
    return [
        *_cover(start_us, inner_start, finer),
        Piece(grain, inner_start, inner_end),
        *_cover(inner_end, end_us, finer),
    ]


def grains_up_to(grain: Grain | None) -> tuple[Grain, ...]:
    """Rollup grains usable for buckets of ``grain`` (all of them when None)."""
    if grain is None:
        return FINEST_FIRST
    return tuple(g for g in FINEST_FIRST if g.us <= grain.us)


# -- ranges ----------------------------------------------------------------------

_PERIOD = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_PERIOD_UNITS = {"m": MINUTE_US, "h": HOUR_US, "d": DAY_US}


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[start_us, end_us)``."""

    start_us: int
    end_us: int


def parse_period(text: str) -> int:
    """``24h``, ``7d``, ``30m`` -> microseconds."""
    match = _PERIOD.match(text.strip())
    if not match:
        raise InvalidInput(
            f"period {text!r} is not a duration like 1h, 24h, 7d or 30d", field="period"
        )
    return int(match.group(1)) * _PERIOD_UNITS[match.group(2)]


def parse_instant(text: str, name: str) -> int:
    """An RFC 3339 timestamp with an offset -> epoch microseconds."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{name} must be an RFC 3339 timestamp such as 2026-11-20T14:00:00Z", field=name
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{name} must carry a UTC offset, e.g. ...T14:00:00Z", field=name)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


@functools.lru_cache(maxsize=65_536)  # bucket starts repeat from one answer to the next
def format_instant(ts_us: int) -> str:
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ts_us)
    if ts_us % US:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_range(
    *,
    start: str | None,
    end: str | None,
    period: str | None,
    now_us: int,
    retention_us: int,
    default_period: str = DEFAULT_PERIOD,
    align_us: int = MINUTE_US,
) -> TimeRange:
    """The range a request names.

    ``period`` (or no time parameter at all) ends at the end of the current
    bucket of width ``align_us`` (when the period is a whole number of them,
    else of the current minute), so the newest events are included and the
    range is made of whole buckets. ``start`` alone runs to the end of the
    current minute; ``end`` alone starts ``default_period`` earlier.
    """
    if period is not None and (start is not None or end is not None):
        raise InvalidInput("give either period or start/end, not both", field="period")
    horizon = ceil_to(now_us + 1, MINUTE_US)
    if start is None and end is None:
        span = parse_period(period or default_period)
        if span > retention_us:
            raise InvalidInput(
                f"period is longer than the retention of {retention_us // DAY_US} days",
                field="period",
            )
        if span % align_us == 0:
            horizon = ceil_to(now_us + 1, align_us)
        return TimeRange(horizon - span, horizon)
    end_us = parse_instant(end, "end") if end is not None else horizon
    start_us = (
        parse_instant(start, "start")
        if start is not None
        else end_us - parse_period(default_period)
    )
    if end_us <= start_us:
        raise InvalidInput("end must be after start", field="end")
    if start_us < now_us - retention_us:
        raise InvalidInput(
            f"start is past the retention of {retention_us // DAY_US} days", field="start"
        )
    return TimeRange(start_us, end_us)


def bucket_count(time_range: TimeRange, grain: Grain) -> int:
    first = floor_to(time_range.start_us, grain.us)
    return (ceil_to(time_range.end_us, grain.us) - first) // grain.us


def choose_grain(time_range: TimeRange, requested: str) -> Grain:
    """The bucket width: the requested one, or for ``auto`` the finest giving <= ~500 buckets."""
    if requested == "auto":
        grain = next(
            (g for g in FINEST_FIRST if bucket_count(time_range, g) <= AUTO_TARGET_BUCKETS),
            Grain.DAY,
        )
    else:
        try:
            grain = Grain(requested)
        except ValueError:
            raise InvalidInput(
                f"granularity {requested!r} is not one of minute, hour, day, auto",
                field="granularity",
            ) from None
    count = bucket_count(time_range, grain)
    if count > MAX_BUCKETS:
        raise InvalidInput(
            f"{count} {grain.value} buckets exceed the limit of {MAX_BUCKETS}; "
            "choose a coarser granularity or a shorter range",
            field="granularity",
        )
    return grain


def bucket_starts(time_range: TimeRange, grain: Grain) -> list[int]:
    return list(range(floor_to(time_range.start_us, grain.us), time_range.end_us, grain.us))


@functools.lru_cache(maxsize=256)
def bucket_labels(time_range: TimeRange, grain: Grain) -> tuple[str, ...]:
    """``format_instant`` of every bucket start; series over one range share it."""
    return tuple(format_instant(b) for b in bucket_starts(time_range, grain))
