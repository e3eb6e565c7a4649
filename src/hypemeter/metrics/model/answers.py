"""The answers of the query API as values: what the services return.

Pure: no I/O, no wire format. JSON and CSV are written from these at the HTTP edge
(``hypemeter.metrics.render``). Metric values are plain numbers: an integral value
is an ``int``, so counts stay counts whatever renders them; None is a value with a
zero denominator (or no reading).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hypemeter.metrics.model.ranges import Grain, TimeRange
from hypemeter.metrics.queries import TrendingRow, UserRow

Number = int | float | None


@dataclass(frozen=True, slots=True)
class Statistics:
    """How an answer was computed: its time in the service and the stored rows it read."""

    elapsed_ms: float
    rows_read: int


@dataclass(frozen=True, slots=True)
class InfluencerTotals:
    """One influencer's totals in a campaign's series, per metric in the asked order."""

    influencer_id: str
    totals: Mapping[str, Number]


@dataclass(frozen=True, slots=True)
class SeriesAnswer:
    """Per-bucket values and totals of some metrics over a range.

    ``values[metric][i]`` is the value in the bucket starting at
    ``bucket_starts(time_range, granularity)[i]``; ``influencers`` is the
    per-influencer breakdown of a campaign (None when not asked for).
    """

    time_range: TimeRange
    granularity: Grain
    metrics: tuple[str, ...]
    values: Mapping[str, Sequence[Number]]
    totals: Mapping[str, Number]
    statistics: Statistics
    influencers: tuple[InfluencerTotals, ...] | None = None


@dataclass(frozen=True, slots=True)
class GroupValue:
    """One metric's value in one group (a platform, influencer, campaign, content or day)."""

    key: str
    value: float | None


@dataclass(frozen=True, slots=True)
class AggregatePage:
    """A page of one metric grouped and sorted; ``next_cursor`` is None on the last page."""

    rows: tuple[GroupValue, ...]
    next_cursor: str | None
    statistics: Statistics


@dataclass(frozen=True, slots=True)
class RankedInfluencer:
    influencer_id: str
    value: float | None
    rank: int


@dataclass(frozen=True, slots=True)
class LeaderboardPage:
    """A page of influencers ranked by one metric, highest first."""

    rows: tuple[RankedInfluencer, ...]
    next_cursor: str | None
    statistics: Statistics


@dataclass(frozen=True, slots=True)
class TrendingPage:
    """A page of content items by total engagement over the last hours."""

    rows: tuple[TrendingRow, ...]
    next_cursor: str | None
    statistics: Statistics


@dataclass(frozen=True, slots=True)
class UserActivityPage:
    """A page of audience users by total engagement since a time."""

    rows: tuple[UserRow, ...]
    next_cursor: str | None
    statistics: Statistics


@dataclass(frozen=True, slots=True)
class EmvRateTable:
    """A tenant's earned media value per unit: every (platform, metric, value) in
    order, and the (platform, metric) pairs the tenant set itself, in order."""

    rates: tuple[tuple[str, str, float], ...]
    custom: tuple[tuple[str, str], ...]
