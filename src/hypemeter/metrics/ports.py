"""The port the metrics capability reads through: rollups and the queries over them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hypemeter.metrics.model import Grain
from hypemeter.metrics.queries import (
    Answer,
    CounterMatrix,
    CounterQuery,
    CounterRow,
    Filters,
    GaugeQuery,
    GaugeRow,
    TrendingQuery,
    TrendingRow,
    UserRow,
)

if TYPE_CHECKING:
    import pyarrow as pa


class MetricsReader(Protocol):
    """The queries a series needs; a MetricsStore, or a view pinned at one commit."""

    async def counters(self, tenant_id: str, query: CounterQuery) -> Answer[CounterRow]: ...

    async def gauges(self, tenant_id: str, query: GaugeQuery) -> Answer[GaugeRow]: ...

    async def unique_users(
        self,
        tenant_id: str,
        start_us: int,
        end_us: int,
        filters: Filters,
        *,
        grain: Grain | None,
        by: str | None,
        engagement_metrics: tuple[str, ...],
    ) -> Answer[tuple[str | None, int | None, int]]:
        """Distinct user ids with engagement events, per (group of ``by``, bucket of ``grain``)."""

    async def emv_rates(self, tenant_id: str) -> dict[tuple[str, str], float]:
        """The tenant's own unit values, (platform, metric) -> value."""


class PinnedView(MetricsReader, Protocol):
    """Queries that all see the store exactly as of commit ``seq``: no later event."""

    seq: int


class MetricsStore(MetricsReader, Protocol):
    """Rollups and the queries over them; every answer equals one over the raw events."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def pinned(self) -> AbstractAsyncContextManager[PinnedView]:
        """A view of every event committed up to one commit, and of nothing after it.

        Live push takes its snapshots in one, then applies the changes of later commits.
        """

    async def counter_matrix(self, tenant_id: str, query: CounterQuery) -> CounterMatrix | None:
        """A bucketed query without ``by`` answered as arrays, when the backend has a fast
        way to; None tells the caller to use ``counters``."""

    async def trending(self, tenant_id: str, query: TrendingQuery) -> Answer[TrendingRow]:
        """One page of trending content (engagement = likes, comments, shares, saves)."""

    async def user_activity(
        self,
        tenant_id: str,
        since_us: int,
        *,
        min_engagement: float,
        engagement_metrics: tuple[str, ...],
        after: tuple[float, str] | None,
        limit: int,
    ) -> Answer[UserRow]:
        """Users by total engagement descending, then user id; ``after`` is the last row seen."""

    async def set_emv_rates(
        self, tenant_id: str, rates: dict[tuple[str, str], float | None]
    ) -> None:
        """Set unit values; None removes a tenant value (the default applies again)."""

    async def rebuild(self, progress: Callable[[int, int], None]) -> int:
        """Recompute every rollup from the raw events; ``progress(done, total)``; events read."""


@dataclass(frozen=True, slots=True)
class CacheLoad:
    """What the query caches start from: hourly sums of every tenant from ``since_us`` on,
    read in one snapshot holding exactly the commits up to ``seq``.

    ``counters``: tenant_id, influencer_id, platform, campaign_id (null: none), metric,
    bucket, total, events. ``engagement`` (engagement metrics of content items):
    tenant_id, content_id, platform, bucket, total, events, latest, sample_t (null: no
    text), sample_text. ``tags``: tenant_id, content_id, platform, bucket, tag, n.
    """

    seq: int
    counters: pa.Table
    engagement: pa.Table
    tags: pa.Table


@runtime_checkable
class CacheableMetricsStore(MetricsStore, Protocol):
    """A MetricsStore the query caches can load from."""

    async def cache_load(self, since_us: int) -> CacheLoad:
        """Read the caches' rows (see CacheLoad); raises StoreUnavailable."""

    def rewrites(self) -> int:
        """How many times this process changed stored events without a commit (an
        erasure, a retention purge): caches loaded before are stale."""
