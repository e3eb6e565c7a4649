"""Series: per-bucket values and totals of some metrics, and what live push starts from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hypemeter.errors import InvalidInput
from hypemeter.events.model import MetricCatalog
from hypemeter.metrics.model import (
    MINUTE_US,
    Frame,
    MetricPlan,
    TimeRange,
    bucket_starts,
    choose_grain,
    column_values,
    counters_only,
    metric_value,
    plain_number,
    plan_metrics,
)
from hypemeter.metrics.model.answers import InfluencerTotals, Number, SeriesAnswer
from hypemeter.metrics.ports import MetricsReader
from hypemeter.metrics.queries import CounterQuery, Filters
from hypemeter.metrics.service.frames import FrameReader, Plan, RangeParams, Slice, Stats

TOTALS = Slice(dim=None, grain=None)


@dataclass(slots=True)
class LiveState:
    """What a live subscription starts from: its metrics, totals and current bucket."""

    plan: MetricPlan
    catalog: MetricCatalog
    rates: dict[tuple[str, str], float]
    totals: Frame
    bucket: Frame
    members: frozenset[str] | None = None  # a campaign's influencers, when followers count


class SeriesQueries:
    """Series of an influencer, a campaign or the whole tenant; live subscriptions' start."""

    def __init__(self, reader: FrameReader) -> None:
        self._reader = reader

    async def series(
        self,
        tenant_id: str,
        *,
        filters: Filters,
        params: RangeParams,
        metrics: str,
        granularity: str,
        breakdown: bool = False,
    ) -> SeriesAnswer:
        """Zero-filled buckets of the range; with ``breakdown``, per-influencer totals of
        every influencer with an event of the campaign. Raises InvalidInput."""
        reader, stats = self._reader, Stats()
        time_range = reader.time_range(params, align_us=MINUTE_US)
        grain = choose_grain(time_range, granularity)
        if params.start is None and params.end is None:
            # A period is made of whole buckets, the last one holding now.
            time_range = reader.time_range(params, align_us=grain.us)
        planned = await reader.plan(tenant_id, metrics)
        plan = planned[0]
        size = len(bucket_starts(time_range, grain))
        matrix = None
        if not breakdown and counters_only(plan):
            matrix = await reader.store.counter_matrix(
                tenant_id,
                CounterQuery(
                    time_range.start_us, time_range.end_us, plan.counters, filters, (), grain
                ),
            )
        values: dict[str, Sequence[Number]]
        if matrix is not None:
            # Column by column: no object per bucket and metric.
            stats.rows_read += matrix.rows_read
            values = {n: column_values(n, matrix.values, size) for n in plan.names}
            total = Frame()
            for metric, sums in matrix.values.items():
                total.add("", metric, math.fsum(sums.tolist()))
            totals = _values(planned, total)
        else:
            frames = await reader.frames(
                tenant_id, time_range, plan, filters, Slice(None, grain), stats
            )
            empty = _empty(plan)
            rows = [
                _values(planned, frames.get((None, bucket), empty))
                for bucket in bucket_starts(time_range, grain)
            ]
            values = {n: [row[n] for row in rows] for n in plan.names}
            totals = _values(planned, frames.get((None, None), empty))
        influencers = None
        if breakdown:
            influencers = await self._breakdown(tenant_id, time_range, planned, filters, stats)
        return SeriesAnswer(
            time_range, grain, plan.names, values, totals, stats.result(), influencers
        )

    async def _breakdown(
        self,
        tenant_id: str,
        time_range: TimeRange,
        planned: Plan,
        filters: Filters,
        stats: Stats,
    ) -> tuple[InfluencerTotals, ...]:
        reader = self._reader
        per = await reader.frames(
            tenant_id, time_range, planned[0], filters, Slice("influencer_id", None), stats
        )
        # Every influencer with an event of the campaign, whichever metric it carried.
        members = await reader.members(tenant_id, time_range, filters, stats)
        who = set().union(*members.values()) | {g for g, _ in per if g is not None}
        empty = _empty(planned[0])
        return tuple(
            InfluencerTotals(group, _values(planned, per.get((group, None), empty)))
            for group in sorted(who)
        )

    def metric_names(self, tenant_id: str, metrics: str) -> tuple[str, ...]:
        """The metrics a live subscription may follow. Raises InvalidInput."""
        plan = plan_metrics(metrics, self._reader.catalog_of(tenant_id))
        if plan.unique_users:
            raise InvalidInput(
                "unique_users is not available live; query it instead", field="metrics"
            )
        return plan.names

    async def live_state(
        self,
        tenant_id: str,
        view: MetricsReader,
        *,
        filters: Filters,
        metrics: str,
        since_us: int,
        until_us: int,
        bucket: TimeRange,
    ) -> LiveState:
        """Frames of a live subscription in a pinned view: totals over
        ``[since_us, until_us)`` and the current ``bucket``."""
        reader = self._reader
        plan, catalog, rates = await reader.plan(tenant_id, metrics, store=view)
        if plan.unique_users:
            raise InvalidInput(
                "unique_users is not available live; query it instead", field="metrics"
            )
        stats = Stats()
        whole = TimeRange(since_us, until_us)
        totals = await reader.frames(tenant_id, whole, plan, filters, TOTALS, stats, view)
        current = await reader.frames(tenant_id, bucket, plan, filters, TOTALS, stats, view)
        total = totals.get((None, None), Frame())
        now = current.get((None, None), Frame())
        now.base = dict(total.base)  # rates in a bucket use the range's followers too
        members = None
        if plan.gauges and filters.campaign_id is not None:
            # Whose followers count: influencers with an event of the campaign in the range.
            found = await reader.members(tenant_id, whole, filters, stats, view)
            members = frozenset(set().union(*found.values())) if found else frozenset()
        return LiveState(plan, catalog, rates, total, now, members)


def _empty(plan: MetricPlan) -> Frame:
    return Frame(unique_users=0 if plan.unique_users else None)


def _values(planned: Plan, item: Frame) -> dict[str, Number]:
    plan, catalog, rates = planned
    return {name: plain_number(metric_value(name, item, catalog, rates)) for name in plan.names}
