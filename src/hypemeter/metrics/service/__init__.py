"""Use cases of the query API: series, groupings, trending content, users and leaderboards.

The store answers sums, readings and distinct counts over covers of a range;
these services turn them into the numbers users ask for (derived metrics,
zero-filled buckets, ranks) and into pages with opaque cursors, returned as the
typed answers of ``hypemeter.metrics.model.answers``. One service per question
family (``series``, ``groupings``, ``activity``, ``emv``), all reading through
one ``FrameReader``; ``MetricsService`` gathers them for the routes and the
live hub.
"""

from __future__ import annotations

from collections.abc import Callable

from hypemeter.clock import Clock
from hypemeter.events.model import MetricCatalog
from hypemeter.metrics.ports import MetricsStore
from hypemeter.metrics.service.activity import ActivityQueries
from hypemeter.metrics.service.emv import EmvRates
from hypemeter.metrics.service.frames import FrameReader, RangeParams
from hypemeter.metrics.service.groupings import GroupQueries
from hypemeter.metrics.service.series import LiveState, SeriesQueries

__all__ = [
    "ActivityQueries",
    "EmvRates",
    "GroupQueries",
    "LiveState",
    "MetricsService",
    "RangeParams",
    "SeriesQueries",
]


class MetricsService:
    """Answers of the query API, each computed in the tenant of the caller."""

    def __init__(
        self,
        store: MetricsStore,
        catalog_of: Callable[[str], MetricCatalog],
        clock: Clock,
        *,
        retention_days: int,
    ) -> None:
        reader = FrameReader(store, catalog_of, clock, retention_days=retention_days)
        self.series_queries = SeriesQueries(reader)
        self.group_queries = GroupQueries(reader)
        self.activity_queries = ActivityQueries(reader)
        self.emv = EmvRates(store, catalog_of)
        self.series = self.series_queries.series
        self.metric_names = self.series_queries.metric_names
        self.live_state = self.series_queries.live_state
        self.aggregate = self.group_queries.aggregate
        self.leaderboard = self.group_queries.leaderboard
        self.trending = self.activity_queries.trending
        self.user_activity = self.activity_queries.user_activity
        self.emv_rates = self.emv.emv_rates
        self.set_emv_rates = self.emv.set_emv_rates
