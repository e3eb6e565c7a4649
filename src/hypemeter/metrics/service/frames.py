"""Reading the store into frames: the stored figures behind each row of an answer.

Every question family of the query API starts here: the range a request names,
the plan of its metrics (with the tenant's EMV unit values when asked for) and
the frames per (group, bucket) the store's sums, readings and distinct counts
fill.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hypemeter.clock import Clock
from hypemeter.errors import InvalidInput
from hypemeter.events.model import PLATFORMS, MetricCatalog
from hypemeter.metrics.model import (
    DAY_US,
    ENGAGEMENT,
    HOUR_US,
    AccountReadings,
    Frame,
    Grain,
    MetricPlan,
    TimeRange,
    bucket_starts,
    emv_table,
    gauge_series,
    plan_metrics,
    resolve_range,
)
from hypemeter.metrics.model.answers import Statistics
from hypemeter.metrics.ports import MetricsReader, MetricsStore
from hypemeter.metrics.queries import CounterQuery, Filters, GaugeQuery, GaugeRow

Key = tuple[str | None, int | None]  # (group, bucket)
Plan = tuple[MetricPlan, MetricCatalog, dict[tuple[str, str], float]]


@dataclass(frozen=True, slots=True)
class RangeParams:
    start: str | None = None
    end: str | None = None
    period: str | None = None


@dataclass(slots=True)
class Stats:
    """What an answer costs, counted while it is computed."""

    started: float = field(default_factory=time.perf_counter)
    rows_read: int = 0

    def result(self) -> Statistics:
        elapsed = (time.perf_counter() - self.started) * 1000
        return Statistics(round(elapsed, 3), self.rows_read)


@dataclass(frozen=True, slots=True)
class Slice:
    """Which frames to read: grouped by ``dim`` (None: one group), bucketed by ``grain``
    (None: totals only)."""

    dim: str | None
    grain: Grain | None


class FrameReader:
    """Ranges, metric plans and frames of one store, each in the tenant of the caller."""

    def __init__(
        self,
        store: MetricsStore,
        catalog_of: Callable[[str], MetricCatalog],
        clock: Clock,
        *,
        retention_days: int,
    ) -> None:
        self.store = store
        self.catalog_of = catalog_of
        self.clock = clock
        self.retention_us = retention_days * DAY_US

    def time_range(
        self, params: RangeParams, default_period: str = "24h", align_us: int = HOUR_US
    ) -> TimeRange:
        return resolve_range(
            start=params.start,
            end=params.end,
            period=params.period,
            now_us=self.clock.now_us(),
            retention_us=self.retention_us,
            default_period=default_period,
            align_us=align_us,
        )

    async def plan(
        self,
        tenant_id: str,
        metrics: str,
        field: str = "metrics",
        store: MetricsReader | None = None,
    ) -> Plan:
        catalog = self.catalog_of(tenant_id)
        plan = plan_metrics(metrics, catalog, field=field)
        if "emv" not in plan.names:
            return plan, catalog, {}
        rates = emv_table(PLATFORMS, await (store or self.store).emv_rates(tenant_id))
        emv_metrics = sorted({m for (_, m), v in rates.items() if v})
        return plan_metrics(metrics, catalog, emv_metrics, field=field), catalog, rates

    async def frames(
        self,
        tenant_id: str,
        time_range: TimeRange,
        plan: MetricPlan,
        filters: Filters,
        part: Slice,
        stats: Stats,
        store: MetricsReader | None = None,
    ) -> dict[Key, Frame]:
        """Frames per (group, bucket), plus per (group, None) the totals when bucketed."""
        frames: dict[Key, Frame] = {}
        reader = store or self.store

        def frame(key: Key) -> Frame:
            found = frames.get(key)
            if found is None:
                found = frames[key] = Frame()
            return found

        if plan.counters:
            await self._counter_frames(
                reader, tenant_id, time_range, plan, filters, part, stats, frame
            )
        if plan.gauges:
            await self._gauge_frames(
                reader, tenant_id, time_range, plan, filters, part, stats, frame
            )
        if plan.unique_users:
            await self._user_frames(reader, tenant_id, time_range, filters, part, stats, frame)
            for item in frames.values():
                if item.unique_users is None:
                    item.unique_users = 0
        return frames

    async def _counter_frames(
        self,
        store: MetricsReader,
        tenant_id: str,
        time_range: TimeRange,
        plan: MetricPlan,
        filters: Filters,
        part: Slice,
        stats: Stats,
        frame: Callable[[Key], Frame],
    ) -> None:
        dim, grain = part.dim, part.grain
        # Per platform only where it matters: EMV weighs each platform's counts.
        per_platform = "emv" in plan.names or dim == "platform"
        by: tuple[str, ...] = () if dim is None else (dim,)
        if per_platform and dim != "platform":
            by = (*by, "platform")
        answer = await store.counters(
            tenant_id,
            CounterQuery(time_range.start_us, time_range.end_us, plan.counters, filters, by, grain),
        )
        stats.rows_read += answer.rows_read
        for row in answer.rows:
            platform = row.key[-1] if per_platform else ""
            group = None if dim is None else row.key[0]
            frame((group, row.bucket)).add(platform, row.metric, row.total)
            if grain is not None:
                frame((group, None)).add(platform, row.metric, row.total)

    async def _user_frames(
        self,
        store: MetricsReader,
        tenant_id: str,
        time_range: TimeRange,
        filters: Filters,
        part: Slice,
        stats: Stats,
        frame: Callable[[Key], Frame],
    ) -> None:
        grain = part.grain
        for bucketed in (grain, None) if grain is not None else (None,):
            users = await store.unique_users(
                tenant_id,
                time_range.start_us,
                time_range.end_us,
                filters,
                grain=bucketed,
                by=part.dim,
                engagement_metrics=ENGAGEMENT,
            )
            stats.rows_read += users.rows_read
            for group, bucket, count in users.rows:
                frame((group, bucket)).unique_users = count

    async def members(
        self,
        tenant_id: str,
        time_range: TimeRange,
        filters: Filters,
        stats: Stats,
        store: MetricsReader | None = None,
    ) -> dict[str, set[str]]:
        """Campaign -> influencers with any event of that campaign in the range."""
        catalog = self.catalog_of(tenant_id)
        answer = await (store or self.store).counters(
            tenant_id,
            CounterQuery(
                time_range.start_us,
                time_range.end_us,
                tuple(catalog.allowed()),
                Filters(filters.influencer_id, filters.platform, filters.campaign_id),
                ("campaign_id", "influencer_id"),
            ),
        )
        stats.rows_read += answer.rows_read
        members: dict[str, set[str]] = {}
        for row in answer.rows:
            members.setdefault(row.key[0], set()).add(row.key[1])
        return members

    async def _gauge_frames(
        self,
        store: MetricsReader,
        tenant_id: str,
        time_range: TimeRange,
        plan: MetricPlan,
        filters: Filters,
        part: Slice,
        stats: Stats,
        frame: Callable[[Key], Frame],
    ) -> None:
        dim, grain = part.dim, part.grain
        if dim == "content_id" or filters.content_id is not None:
            raise InvalidInput(
                "gauges (followers) and follower-based metrics are per account, not per "
                "content item",
                field="metric",
            )
        members: dict[str, set[str]] = {}
        influencers: tuple[str, ...] | None = None
        if filters.influencer_id is not None:
            influencers = (filters.influencer_id,)
        if dim == "campaign_id" or filters.campaign_id is not None:
            members = await self.members(tenant_id, time_range, filters, stats, store)
            union = set().union(*members.values()) if members else set()
            influencers = tuple(sorted(union))
        answer = await store.gauges(
            tenant_id,
            GaugeQuery(
                time_range.start_us,
                time_range.end_us,
                plan.gauges,
                influencers,
                filters.platform,
                grain,
            ),
        )
        stats.rows_read += answer.rows_read
        grouped: dict[tuple[str | None, str], list[AccountReadings]] = {}
        for row in answer.rows:
            for group in _groups_of(row, dim, members):
                grouped.setdefault((group, row.metric), []).append(row.readings)
        buckets = bucket_starts(time_range, grain) if grain is not None else [time_range.start_us]
        for (group, metric), accounts in grouped.items():
            values, base, growth = gauge_series(accounts, buckets)
            if grain is not None:
                for i, bucket in enumerate(buckets):
                    item = frame((group, bucket))
                    item.gauges[metric], item.base[metric] = values[i], base
                    item.growth[metric] = growth[i]
            total = frame((group, None))
            total.gauges[metric], total.base[metric] = values[-1], base
            known = [g for g in growth if g is not None]
            total.growth[metric] = sum(known) if known else None


def _groups_of(row: GaugeRow, dim: str | None, members: dict[str, set[str]]) -> list[str | None]:
    """The groups an account's readings count in."""
    if dim is None:
        return [None]
    if dim == "influencer_id":
        return [row.influencer_id]
    if dim == "platform":
        return [row.platform]
    return [c for c, who in members.items() if row.influencer_id in who]
