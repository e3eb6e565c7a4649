"""Rules of the query API: time ranges, buckets, covers, metric names and derived values.

Pure data and arithmetic; nothing here does I/O. Every timestamp is an integer
count of microseconds since the Unix epoch (UTC).

A range ``[start, end)`` is answered by a *cover*: disjoint pieces, each read
from the coarsest rollup grain that fits whole buckets inside it, with the
ragged ends read from raw events. Counters are sums, so any cover of a range
gives the same total as the raw events; gauge readings merge by taking the
first or last reading, which any cover preserves too.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from hypemeter.errors import InvalidInput
from hypemeter.events.model import MetricCatalog, MetricKind

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


# -- metrics ---------------------------------------------------------------------

ENGAGEMENT = ("likes", "comments", "shares", "saves")
FOLLOWERS = "followers"


class Derived(enum.StrEnum):
    ENGAGEMENT = "engagement"
    ENGAGEMENT_RATE = "engagement_rate"
    ENGAGEMENT_RATE_BY_VIEWS = "engagement_rate_by_views"
    ENGAGEMENT_RATE_BY_REACH = "engagement_rate_by_reach"
    CTR = "ctr"
    CONVERSION_RATE = "conversion_rate"
    FOLLOWER_GROWTH = "follower_growth"
    FOLLOWER_GROWTH_PCT = "follower_growth_pct"
    EMV = "emv"
    UNIQUE_USERS = "unique_users"


# The stored metrics each derived metric reads.
DERIVED_INPUTS: Mapping[Derived, tuple[str, ...]] = {
    Derived.ENGAGEMENT: ENGAGEMENT,
    Derived.ENGAGEMENT_RATE: (*ENGAGEMENT, FOLLOWERS),
    Derived.ENGAGEMENT_RATE_BY_VIEWS: (*ENGAGEMENT, "views"),
    Derived.ENGAGEMENT_RATE_BY_REACH: (*ENGAGEMENT, "reach"),
    Derived.CTR: ("clicks", "impressions"),
    Derived.CONVERSION_RATE: ("conversions", "clicks"),
    Derived.FOLLOWER_GROWTH: (FOLLOWERS,),
    Derived.FOLLOWER_GROWTH_PCT: (FOLLOWERS,),
    Derived.EMV: (),
    Derived.UNIQUE_USERS: (),
}
FOLLOWER_BASED = frozenset(
    {Derived.ENGAGEMENT_RATE, Derived.FOLLOWER_GROWTH, Derived.FOLLOWER_GROWTH_PCT}
)


@dataclass(frozen=True, slots=True)
class MetricPlan:
    """What answering a list of requested metrics needs from the store."""

    names: tuple[str, ...]
    counters: tuple[str, ...]
    gauges: tuple[str, ...]
    unique_users: bool


def plan_metrics(
    raw: str | Iterable[str],
    catalog: MetricCatalog,
    emv_metrics: Iterable[str] = (),
    *,
    field: str = "metrics",
) -> MetricPlan:
    """Validate metric names (stored, alias or derived) and list the stored ones they read.

    ``field`` is the request parameter errors name.
    """
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names: list[str] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        name = _metric_name(text, catalog, field)
        if name not in names:
            names.append(name)
    if not names:
        raise InvalidInput(
            f"name at least one metric; allowed: {', '.join(allowed_metrics(catalog))}",
            field=field,
        )
    counters: list[str] = []
    gauges: list[str] = []
    for name in names:
        inputs: Iterable[str]
        if name in Derived.__members__.values():
            derived = Derived(name)
            inputs = emv_metrics if derived is Derived.EMV else DERIVED_INPUTS[derived]
        else:
            inputs = (name,)
        for stored in inputs:
            target = gauges if catalog.kind_of(stored) is MetricKind.GAUGE else counters
            if stored not in target:
                target.append(stored)
    return MetricPlan(
        tuple(names), tuple(counters), tuple(gauges), Derived.UNIQUE_USERS.value in names
    )


def _metric_name(text: str, catalog: MetricCatalog, field: str) -> str:
    lowered = text.lower()
    if lowered in Derived.__members__.values():
        return lowered
    name = catalog.normalize(text)
    if name is None:
        allowed = ", ".join(allowed_metrics(catalog))
        raise InvalidInput(f"unknown metric {text!r}; allowed: {allowed}", field=field)
    return name


def allowed_metrics(catalog: MetricCatalog) -> list[str]:
    return [*catalog.allowed(), *(d.value for d in Derived)]


# -- values of one frame ----------------------------------------------------------


@dataclass(slots=True)
class Frame:
    """The stored figures behind one row of an answer (a bucket, a group or the totals).

    ``counters`` sums by (platform, metric); ``gauges`` holds per gauge metric the
    sum over accounts of the value at the frame's end (None without any reading);
    ``base`` holds per gauge metric the value at the start of the query's range,
    the denominator of follower-based metrics; ``growth`` the change since it.
    """

    counters: dict[tuple[str, str], float] = field(default_factory=dict)
    gauges: dict[str, float | None] = field(default_factory=dict)
    base: dict[str, float | None] = field(default_factory=dict)
    growth: dict[str, float | None] = field(default_factory=dict)
    unique_users: int | None = None

    def add(self, platform: str, metric: str, value: float) -> None:
        key = (platform, metric)
        self.counters[key] = self.counters.get(key, 0.0) + value

    def total(self, metric: str) -> float:
        # fsum: the same answer whatever order the rows came in.
        return math.fsum(v for (_, m), v in self.counters.items() if m == metric)


def _ratio(numerator: float, denominator: float | None) -> float | None:
    if denominator is None or denominator == 0:
        return None
    return numerator / denominator * 100.0


def _engagement(frame: Frame) -> float:
    return math.fsum(frame.total(m) for m in ENGAGEMENT)


def _growth_pct(frame: Frame) -> float | None:
    growth = frame.growth.get(FOLLOWERS)
    return None if growth is None else _ratio(growth, frame.base.get(FOLLOWERS))


_DERIVED_VALUE: Mapping[Derived, Callable[[Frame, Mapping[tuple[str, str], float]], float | None]]
_DERIVED_VALUE = {
    Derived.ENGAGEMENT: lambda f, _: _engagement(f),
    Derived.ENGAGEMENT_RATE: lambda f, _: _ratio(_engagement(f), f.base.get(FOLLOWERS)),
    Derived.ENGAGEMENT_RATE_BY_VIEWS: lambda f, _: _ratio(_engagement(f), f.total("views")),
    Derived.ENGAGEMENT_RATE_BY_REACH: lambda f, _: _ratio(_engagement(f), f.total("reach")),
    Derived.CTR: lambda f, _: _ratio(f.total("clicks"), f.total("impressions")),
    Derived.CONVERSION_RATE: lambda f, _: _ratio(f.total("conversions"), f.total("clicks")),
    Derived.FOLLOWER_GROWTH: lambda f, _: f.growth.get(FOLLOWERS),
    Derived.FOLLOWER_GROWTH_PCT: lambda f, _: _growth_pct(f),
    Derived.EMV: lambda f, rates: math.fsum(v * rates.get(k, 0.0) for k, v in f.counters.items()),
    Derived.UNIQUE_USERS: lambda f, _: None if f.unique_users is None else float(f.unique_users),
}


# Derived metrics that read counters only: (numerator metrics, denominator or None).
COUNTER_DERIVED: Mapping[str, tuple[tuple[str, ...], str | None]] = {
    Derived.ENGAGEMENT.value: (ENGAGEMENT, None),
    Derived.ENGAGEMENT_RATE_BY_VIEWS.value: (ENGAGEMENT, "views"),
    Derived.ENGAGEMENT_RATE_BY_REACH.value: (ENGAGEMENT, "reach"),
    Derived.CTR.value: (("clicks",), "impressions"),
    Derived.CONVERSION_RATE.value: (("conversions",), "clicks"),
}


def counters_only(plan: MetricPlan) -> bool:
    """Whether every metric of the plan is a counter or derived from counters alone."""
    return not plan.gauges and not plan.unique_users and "emv" not in plan.names


def column_values(
    name: str, sums: Mapping[str, npt.NDArray[np.float64]], size: int
) -> list[float | int | None]:
    """A metric's values over buckets whose counter sums are arrays (a counters-only plan):
    what ``metric_value`` gives for each bucket's frame, as plain numbers."""
    derived = COUNTER_DERIVED.get(name)
    if derived is None:
        return plain_column(sums.get(name, np.zeros(size)))
    inputs, denominator = derived
    numerator = np.zeros(size)
    for metric in inputs:
        if metric in sums:
            numerator = numerator + sums[metric]
    if denominator is None:
        return plain_column(numerator)
    below = sums.get(denominator, np.zeros(size))
    zero = below == 0
    ratio = numerator / np.where(zero, 1.0, below) * 100.0
    values = plain_column(ratio)
    return [None if z else v for v, z in zip(values, zero.tolist(), strict=True)]


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


def plain_column(values: npt.NDArray[np.float64]) -> list[float | int | None]:
    """``plain_number`` of every element."""
    integral = (values == np.trunc(values)) & (np.abs(values) < 2**53)
    if integral.all():
        return values.astype(np.int64).tolist()  # type: ignore[no-any-return]
    return [
        int(v) if whole else v for v, whole in zip(values.tolist(), integral.tolist(), strict=True)
    ]


_DERIVED_BY_NAME = {d.value: f for d, f in _DERIVED_VALUE.items()}


def metric_value(
    name: str, frame: Frame, catalog: MetricCatalog, emv_rates: Mapping[tuple[str, str], float]
) -> float | None:
    """The value of a stored or derived metric over one frame; None for a zero denominator."""
    derived = _DERIVED_BY_NAME.get(name)
    if derived is not None:
        return derived(frame, emv_rates)
    if catalog.kind_of(name) is MetricKind.GAUGE:
        return frame.gauges.get(name)
    return frame.total(name)


# -- gauges ------------------------------------------------------------------------

Point = tuple[int, float]  # (ts_us, value); readings are ordered by ts, then by value


@dataclass(slots=True)
class AccountReadings:
    """What the store tells about one account's readings of one gauge metric.

    ``at_start``: the last reading at or before the range's start; ``first``: the
    first reading inside the range; ``bucket_last``: per bucket start, the last
    reading inside that bucket (and inside the range).
    """

    at_start: Point | None = None
    first: Point | None = None
    bucket_last: dict[int, Point] = field(default_factory=dict)

    def start_value(self) -> float | None:
        """Last reading at or before the start, else the first inside the range."""
        point = self.at_start or self.first
        return None if point is None else point[1]


def last_of(a: Point | None, b: Point | None) -> Point | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def first_of(a: Point | None, b: Point | None) -> Point | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def gauge_series(
    accounts: Iterable[AccountReadings], buckets: Sequence[int]
) -> tuple[list[float | None], float | None, list[float | None]]:
    """Per bucket the summed value at the bucket's end, the summed start value, per-bucket growth.

    An account counts once it has a reading at or before the bucket's end; its
    start value is the last reading at or before the range's start, else its
    first reading inside the range. Growth in a bucket is the change of the
    summed value over accounts with a reading in the range, each account's value
    before its first reading being its start value, so growths add up to the
    range's growth.
    """
    values: list[float | None] = [None] * len(buckets)
    growth: list[float | None] = [None] * len(buckets)
    base: float | None = None
    for account in accounts:
        start = account.start_value()
        if start is not None:
            base = (base or 0.0) + start
        current = account.at_start
        previous = start
        for i, bucket in enumerate(buckets):
            current = last_of(current, account.bucket_last.get(bucket))
            if current is not None:
                values[i] = (values[i] or 0.0) + current[1]
            if previous is not None:
                now = current[1] if current is not None else previous
                growth[i] = (growth[i] or 0.0) + (now - previous)
                previous = now
    return values, base, growth


# -- EMV ----------------------------------------------------------------------------

# Earned media value per unit, in the tenant's currency, for every platform unless a
# tenant sets its own. Orders of magnitude in line with what paid media costs
# (CPM around 5 for impressions, a paid click around 1), meant to be replaced.
DEFAULT_EMV_RATES: Mapping[str, float] = {
    "impressions": 0.005,
    "reach": 0.005,
    "views": 0.02,
    "likes": 0.10,
    "comments": 0.50,
    "shares": 0.80,
    "saves": 0.60,
    "clicks": 1.00,
    "conversions": 10.00,
}


def emv_table(
    platforms: Iterable[str], overrides: Mapping[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """(platform, metric) -> unit value: the defaults for every platform, then the overrides."""
    table = {(p, m): v for p in platforms for m, v in DEFAULT_EMV_RATES.items()}
    table.update(overrides)
    return table


# -- cursors ------------------------------------------------------------------------


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


def plain_number(value: float | None) -> float | int | None:
    """Integral values as integers, so counts read as counts in JSON and CSV."""
    if value is None:
        return None
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value
