"""The questions the query API asks a metrics store, and the rows it gets back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from hypemeter.metrics.model import AccountReadings, Grain

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

T = TypeVar("T")

# The dimensions counters can be grouped by.
DIMENSIONS = ("influencer_id", "platform", "campaign_id", "content_id")


@dataclass(frozen=True, slots=True)
class Filters:
    """Equality filters of a query; None matches everything."""

    influencer_id: str | None = None
    platform: str | None = None
    campaign_id: str | None = None
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class CounterQuery:
    """Sums of counted values (and event counts) over ``[start_us, end_us)``.

    Rows are grouped by the dimensions in ``by`` (events lacking a dimension's
    value are left out) and, when ``grain`` is set, by bucket of that grain.
    """

    start_us: int
    end_us: int
    metrics: tuple[str, ...]
    filters: Filters = Filters()
    by: tuple[str, ...] = ()
    grain: Grain | None = None


@dataclass(frozen=True, slots=True)
class CounterRow:
    key: tuple[str, ...]
    bucket: int | None
    metric: str
    total: float
    events: int


@dataclass(frozen=True, slots=True)
class CounterMatrix:
    """Bucketed counter sums as arrays: ``values[metric][i]`` is the bucket at
    ``origin_us + i * grain_us``; every bucket of the query's range is there."""

    origin_us: int
    grain_us: int
    values: dict[str, npt.NDArray[np.float64]]
    rows_read: int


@dataclass(frozen=True, slots=True)
class GaugeQuery:
    """Readings of gauge metrics per account (influencer, platform), see AccountReadings."""

    start_us: int
    end_us: int
    metrics: tuple[str, ...]
    influencer_ids: tuple[str, ...] | None = None
    platform: str | None = None
    grain: Grain | None = None


@dataclass(frozen=True, slots=True)
class GaugeRow:
    influencer_id: str
    platform: str
    metric: str
    readings: AccountReadings


@dataclass(frozen=True, slots=True)
class TrendingQuery:
    """Content items with at least ``min_interactions`` engagement events in the range.

    Ordered by total engagement descending, then content id; ``after`` is the
    (engagement, content id) of the last row of the previous page.
    """

    start_us: int
    end_us: int
    platform: str | None
    min_interactions: int
    after: tuple[float, str] | None
    limit: int


@dataclass(frozen=True, slots=True)
class TrendingRow:
    content_id: str
    interactions: int
    engagement: float
    latest_us: int
    sample_text: str | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    interactions: int
    engagement: float
    platforms: tuple[str, ...]
    last_seen_us: int


@dataclass(slots=True)
class Answer(Generic[T]):
    """Rows of a query and how many stored rows (rollup or raw) were aggregated for them."""

    rows: list[T]
    rows_read: int
