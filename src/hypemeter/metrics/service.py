"""Use cases of the query API: series, groupings, trending content, users and leaderboards.

The store answers sums, readings and distinct counts over covers of a range;
this service turns them into the numbers users ask for (derived metrics,
zero-filled buckets, ranks) and into pages with opaque cursors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypemeter.clock import Clock
from hypemeter.errors import InvalidInput
from hypemeter.events.model import PLATFORMS, MetricCatalog, MetricKind, normalize_platform
from hypemeter.metrics.model import (
    DAY_US,
    ENGAGEMENT,
    FOLLOWER_BASED,
    HOUR_US,
    MINUTE_US,
    AccountReadings,
    Columns,
    Frame,
    Grain,
    MetricPlan,
    TimeRange,
    bucket_labels,
    bucket_starts,
    ceil_to,
    choose_grain,
    column_values,
    counters_only,
    decode_cursor,
    emv_table,
    encode_cursor,
    format_instant,
    gauge_series,
    metric_value,
    page_after,
    parse_instant,
    plain_number,
    plan_metrics,
    resolve_range,
)
from hypemeter.metrics.ports import MetricsReader, MetricsStore
from hypemeter.metrics.queries import CounterQuery, Filters, GaugeQuery, GaugeRow, TrendingQuery

GROUP_BY = {
    "platform": "platform",
    "influencer": "influencer_id",
    "campaign": "campaign_id",
    "content": "content_id",
    "day": None,
}
SORTS = ("-value", "value", "key", "-key")
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class RangeParams:
    start: str | None = None
    end: str | None = None
    period: str | None = None


@dataclass(slots=True)
class _Stats:
    started: float = field(default_factory=time.perf_counter)
    rows_read: int = 0

    def payload(self) -> dict[str, Any]:
        elapsed = (time.perf_counter() - self.started) * 1000
        return {"elapsed_ms": round(elapsed, 3), "rows_read": self.rows_read}


Key = tuple[str | None, int | None]  # (group, bucket)


@dataclass(slots=True)
class LiveState:
    """What a live subscription starts from: its metrics, totals and current bucket."""

    plan: MetricPlan
    catalog: MetricCatalog
    rates: dict[tuple[str, str], float]
    totals: Frame
    bucket: Frame
    members: frozenset[str] | None = None  # a campaign's influencers, when followers count


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
        self._store = store
        self._catalog_of = catalog_of
        self._clock = clock
        self._retention_us = retention_days * DAY_US

    # -- ranges and plans ----------------------------------------------------------

    def _range(
        self, params: RangeParams, default_period: str = "24h", align_us: int = HOUR_US
    ) -> TimeRange:
        return resolve_range(
            start=params.start,
            end=params.end,
            period=params.period,
            now_us=self._clock.now_us(),
            retention_us=self._retention_us,
            default_period=default_period,
            align_us=align_us,
        )

    async def _plan(
        self,
        tenant_id: str,
        metrics: str,
        field: str = "metrics",
        store: MetricsReader | None = None,
    ) -> tuple[MetricPlan, MetricCatalog, dict[tuple[str, str], float]]:
        catalog = self._catalog_of(tenant_id)
        plan = plan_metrics(metrics, catalog, field=field)
        if "emv" not in plan.names:
            return plan, catalog, {}
        rates = emv_table(PLATFORMS, await (store or self._store).emv_rates(tenant_id))
        emv_metrics = sorted({m for (_, m), v in rates.items() if v})
        return plan_metrics(metrics, catalog, emv_metrics, field=field), catalog, rates

    # -- frames --------------------------------------------------------------------

    async def _frames(
        self,
        tenant_id: str,
        time_range: TimeRange,
        plan: MetricPlan,
        filters: Filters,
        *,
        dim: str | None,
        grain: Grain | None,
        stats: _Stats,
        store: MetricsReader | None = None,
    ) -> dict[Key, Frame]:
        """Frames per (group, bucket), plus per (group, None) the totals when bucketed."""
        frames: dict[Key, Frame] = {}
        reader = store or self._store

        def frame(key: Key) -> Frame:
            found = frames.get(key)
            if found is None:
                found = frames[key] = Frame()
            return found

        if plan.counters:
            await self._counter_frames(
                reader, tenant_id, time_range, plan, filters, dim, grain, stats, frame
            )
        if plan.gauges:
            await self._gauge_frames(
                reader, tenant_id, time_range, plan, filters, dim, grain, stats, frame
            )
        if plan.unique_users:
            await self._user_frames(
                reader, tenant_id, time_range, filters, dim, grain, stats, frame
            )
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
        dim: str | None,
        grain: Grain | None,
        stats: _Stats,
        frame: Callable[[Key], Frame],
    ) -> None:
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
        dim: str | None,
        grain: Grain | None,
        stats: _Stats,
        frame: Callable[[Key], Frame],
    ) -> None:
        for bucketed in (grain, None) if grain is not None else (None,):
            users = await store.unique_users(
                tenant_id,
                time_range.start_us,
                time_range.end_us,
                filters,
                grain=bucketed,
                by=dim,
                engagement_metrics=ENGAGEMENT,
            )
            stats.rows_read += users.rows_read
            for group, bucket, count in users.rows:
                frame((group, bucket)).unique_users = count

    async def _members(
        self,
        tenant_id: str,
        time_range: TimeRange,
        filters: Filters,
        stats: _Stats,
        store: MetricsReader | None = None,
    ) -> dict[str, set[str]]:
        """Campaign -> influencers with any event of that campaign in the range."""
        catalog = self._catalog_of(tenant_id)
        answer = await (store or self._store).counters(
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
        dim: str | None,
        grain: Grain | None,
        stats: _Stats,
        frame: Callable[[Key], Frame],
    ) -> None:
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
            members = await self._members(tenant_id, time_range, filters, stats, store)
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

    # -- 1 and 7: series -----------------------------------------------------------------

    async def series(
        self,
        tenant_id: str,
        *,
        scope: dict[str, str],
        filters: Filters,
        params: RangeParams,
        metrics: str,
        granularity: str,
        breakdown: bool = False,
    ) -> dict[str, Any]:
        stats = _Stats()
        time_range = self._range(params, align_us=MINUTE_US)
        grain = choose_grain(time_range, granularity)
        if params.start is None and params.end is None:
            # A period is made of whole buckets, the last one holding now.
            time_range = self._range(params, align_us=grain.us)
        plan, catalog, rates = await self._plan(tenant_id, metrics)
        empty = Frame(unique_users=0 if plan.unique_users else None)

        def values(item: Frame) -> dict[str, Any]:
            return {
                name: plain_number(metric_value(name, item, catalog, rates)) for name in plan.names
            }

        buckets = bucket_starts(time_range, grain)
        matrix = None
        if not breakdown and counters_only(plan):
            matrix = await self._store.counter_matrix(
                tenant_id,
                CounterQuery(
                    time_range.start_us, time_range.end_us, plan.counters, filters, (), grain
                ),
            )
        if matrix is not None:
            # Column by column: no object per bucket and metric.
            stats.rows_read += matrix.rows_read
            columns: list[Sequence[Any]] = [bucket_labels(time_range, grain)]
            columns += [column_values(n, matrix.values, len(buckets)) for n in plan.names]
            series: list[dict[str, Any]] | Columns = Columns(("ts", *plan.names), columns)
            total = Frame()
            for metric, sums in matrix.values.items():
                total.add("", metric, math.fsum(sums.tolist()))
            totals = values(total)
        else:
            frames = await self._frames(
                tenant_id, time_range, plan, filters, dim=None, grain=grain, stats=stats
            )
            series = [
                {"ts": format_instant(bucket), **values(frames.get((None, bucket), empty))}
                for bucket in buckets
            ]
            totals = values(frames.get((None, None), empty))
        answer: dict[str, Any] = {
            **scope,
            "start": format_instant(time_range.start_us),
            "end": format_instant(time_range.end_us),
            "granularity": grain.value,
            "metrics": list(plan.names),
            "series": series,
            "totals": totals,
        }
        if breakdown:
            per = await self._frames(
                tenant_id, time_range, plan, filters, dim="influencer_id", grain=None, stats=stats
            )
            # Every influencer with an event of the campaign, whichever metric it carried.
            members = await self._members(tenant_id, time_range, filters, stats)
            who = set().union(*members.values()) | {g for g, _ in per if g is not None}
            answer["influencers"] = [
                {"influencer_id": group, "totals": values(per.get((group, None), empty))}
                for group in sorted(who)
            ]
        answer["statistics"] = stats.payload()
        return answer

    # -- live push ---------------------------------------------------------------------

    def metric_names(self, tenant_id: str, metrics: str) -> tuple[str, ...]:
        plan = plan_metrics(metrics, self._catalog_of(tenant_id))
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
        plan, catalog, rates = await self._plan(tenant_id, metrics, store=view)
        if plan.unique_users:
            raise InvalidInput(
                "unique_users is not available live; query it instead", field="metrics"
            )
        stats = _Stats()
        whole = TimeRange(since_us, until_us)
        totals = await self._frames(
            tenant_id, whole, plan, filters, dim=None, grain=None, stats=stats, store=view
        )
        current = await self._frames(
            tenant_id, bucket, plan, filters, dim=None, grain=None, stats=stats, store=view
        )
        total = totals.get((None, None), Frame())
        now = current.get((None, None), Frame())
        now.base = dict(total.base)  # rates in a bucket use the range's followers too
        members = None
        if plan.gauges and filters.campaign_id is not None:
            # Whose followers count: influencers with an event of the campaign in the range.
            found = await self._members(tenant_id, whole, filters, stats, view)
            members = frozenset(set().union(*found.values())) if found else frozenset()
        return LiveState(plan, catalog, rates, total, now, members)

    # -- 3 and 6: groupings --------------------------------------------------------------

    async def aggregate(
        self,
        tenant_id: str,
        *,
        metric: str,
        group_by: str,
        params: RangeParams,
        filters: Filters,
        sort: str,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        stats = _Stats()
        page, next_cursor, _ = await self._grouped(
            tenant_id, metric, group_by, params, filters, sort, limit, cursor, "24h", stats
        )
        return {
            "data": [{"key": k, "value": plain_number(v)} for k, v in page],
            "next_cursor": next_cursor,
            "statistics": stats.payload(),
        }

    async def leaderboard(
        self,
        tenant_id: str,
        *,
        metric: str,
        params: RangeParams,
        platform: str | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        stats = _Stats()
        page, next_cursor, offset = await self._grouped(
            tenant_id,
            metric,
            "influencer",
            params,
            Filters(platform=platform),
            "-value",
            limit,
            cursor,
            "7d",
            stats,
        )
        return {
            "data": [
                {"influencer_id": k, "value": plain_number(v), "rank": offset + i + 1}
                for i, (k, v) in enumerate(page)
            ],
            "next_cursor": next_cursor,
            "statistics": stats.payload(),
        }

    async def _grouped(
        self,
        tenant_id: str,
        metric: str,
        group_by: str,
        params: RangeParams,
        filters: Filters,
        sort: str,
        limit: int,
        cursor: str | None,
        default_period: str,
        stats: _Stats,
    ) -> tuple[list[tuple[str, float | None]], str | None, int]:
        """One page of (key, value) in a stable order, the next cursor, rows before the page."""
        if group_by not in GROUP_BY:
            raise InvalidInput(
                f"group_by {group_by!r} is not one of {', '.join(GROUP_BY)}", field="group_by"
            )
        if sort not in SORTS:
            raise InvalidInput(f"sort {sort!r} is not one of {', '.join(SORTS)}", field="sort")
        _check_limit(limit)
        time_range = self._range(params, default_period)
        plan, catalog, rates = await self._plan(tenant_id, metric, "metric")
        if len(plan.names) != 1:
            raise InvalidInput("name exactly one metric", field="metric")
        name = plan.names[0]
        dim = GROUP_BY[group_by]
        if dim == "content_id" and (plan.gauges or name in FOLLOWER_BASED):
            raise InvalidInput(
                f"{name} is defined per account, not per content item", field="metric"
            )
        grain = Grain.DAY if group_by == "day" else None
        if grain is not None:
            choose_grain(time_range, grain.value)
        scope = f"{group_by}|{tenant_id}|{name}|{sort}|{time_range}|{filters}"
        after = decode_cursor(cursor, scope) if cursor else None
        frames = await self._frames(
            tenant_id, time_range, plan, filters, dim=dim, grain=grain, stats=stats
        )
        rows: list[tuple[str, float | None]] = []
        if grain is not None:
            for bucket in bucket_starts(time_range, grain):
                item = frames.get((None, bucket)) or Frame(
                    unique_users=0 if plan.unique_users else None
                )
                rows.append((format_instant(bucket)[:10], metric_value(name, item, catalog, rates)))
        else:
            rows = [
                (str(group), metric_value(name, item, catalog, rates))
                for (group, bucket), item in frames.items()
                if group is not None and bucket is None
            ]
        key = _sort_key(sort)
        ordered = sorted(rows, key=key)
        page, next_key, offset = page_after(ordered, key, after, limit)
        next_cursor = encode_cursor(scope, next_key) if next_key is not None else None
        return page, next_cursor, offset

    # -- 4: trending -----------------------------------------------------------------------

    async def trending(
        self,
        tenant_id: str,
        *,
        hours_back: int,
        platform: str | None,
        min_interactions: int,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        stats = _Stats()
        _check_limit(limit)
        if hours_back < 1 or hours_back * HOUR_US > self._retention_us:
            raise InvalidInput(
                f"hours_back must be between 1 and {self._retention_us // HOUR_US} (retention)",
                field="hours_back",
            )
        if min_interactions < 0:
            raise InvalidInput("min_interactions cannot be negative", field="min_interactions")
        end_us = ceil_to(self._clock.now_us() + 1, HOUR_US)
        scope = f"trending|{tenant_id}|{hours_back}|{platform}|{min_interactions}"
        after = _after(decode_cursor(cursor, scope)) if cursor else None
        answer = await self._store.trending(
            tenant_id,
            TrendingQuery(
                end_us - hours_back * HOUR_US,
                end_us,
                platform,
                min_interactions,
                after,
                limit + 1,
            ),
        )
        stats.rows_read = answer.rows_read
        page = answer.rows[:limit]
        more = len(answer.rows) > limit
        next_key = [page[-1].engagement, page[-1].content_id] if more and page else None
        return {
            "data": [
                {
                    "content_id": r.content_id,
                    "interaction_count": r.interactions,
                    "total_engagement": plain_number(r.engagement),
                    "latest_interaction": format_instant(r.latest_us),
                    "sample_text": r.sample_text,
                    "common_tags": list(r.tags),
                }
                for r in page
            ],
            "next_cursor": encode_cursor(scope, next_key) if next_key is not None else None,
            "statistics": stats.payload(),
        }

    # -- 5: users ------------------------------------------------------------------------

    async def user_activity(
        self,
        tenant_id: str,
        *,
        since: str | None,
        min_engagement: float,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        stats = _Stats()
        _check_limit(limit)
        now_us = self._clock.now_us()
        since_us = parse_instant(since, "since") if since else now_us - DAY_US
        if since_us < now_us - self._retention_us:
            raise InvalidInput(
                f"since is past the retention of {self._retention_us // DAY_US} days",
                field="since",
            )
        scope = f"users|{tenant_id}|{since_us}|{min_engagement}"
        after = _after(decode_cursor(cursor, scope)) if cursor else None
        answer = await self._store.user_activity(
            tenant_id,
            since_us,
            min_engagement=min_engagement,
            engagement_metrics=ENGAGEMENT,
            after=after,
            limit=limit + 1,
        )
        stats.rows_read = answer.rows_read
        page = answer.rows[:limit]
        more = len(answer.rows) > limit
        return {
            "data": [
                {
                    "user_id": r.user_id,
                    "interaction_count": r.interactions,
                    "total_engagement": plain_number(r.engagement),
                    "platforms": list(r.platforms),
                    "last_seen": format_instant(r.last_seen_us),
                }
                for r in page
            ],
            "next_cursor": (
                encode_cursor(scope, [page[-1].engagement, page[-1].user_id])
                if more and page
                else None
            ),
            "statistics": stats.payload(),
        }

    # -- EMV -------------------------------------------------------------------------------

    async def emv_rates(self, tenant_id: str) -> dict[str, Any]:
        overrides = await self._store.emv_rates(tenant_id)
        table = emv_table(PLATFORMS, overrides)
        rates: dict[str, dict[str, float]] = {}
        for (platform, metric), value in sorted(table.items()):
            rates.setdefault(platform, {})[metric] = value
        return {"rates": rates, "custom": [f"{p}.{m}" for p, m in sorted(overrides)]}

    async def set_emv_rates(
        self, tenant_id: str, rates: dict[str, dict[str, float | None]]
    ) -> dict[str, Any]:
        catalog = self._catalog_of(tenant_id)
        changes: dict[tuple[str, str], float | None] = {}
        for raw_platform, values in rates.items():
            platform = normalize_platform(raw_platform)
            if platform is None:
                raise InvalidInput(
                    f"unknown platform {raw_platform!r}; allowed: {', '.join(PLATFORMS)}",
                    field=f"rates.{raw_platform}",
                )
            for raw_metric, value in values.items():
                metric = catalog.normalize(raw_metric)
                if metric is None or catalog.kind_of(metric) is not MetricKind.COUNTER:
                    raise InvalidInput(
                        f"{raw_metric!r} is not a counter metric of this tenant",
                        field=f"rates.{raw_platform}.{raw_metric}",
                    )
                if value is not None and not (0 <= value < 1e9):
                    raise InvalidInput(
                        "a unit value must be between 0 and 1e9",
                        field=f"rates.{raw_platform}.{raw_metric}",
                    )
                changes[(platform, metric)] = value
        await self._store.set_emv_rates(tenant_id, changes)
        return await self.emv_rates(tenant_id)


def _groups_of(row: GaugeRow, dim: str | None, members: dict[str, set[str]]) -> list[str | None]:
    """The groups an account's readings count in."""
    if dim is None:
        return [None]
    if dim == "influencer_id":
        return [row.influencer_id]
    if dim == "platform":
        return [row.platform]
    return [c for c, who in members.items() if row.influencer_id in who]


def _after(position: list[Any]) -> tuple[float, str]:
    """A (value, key) cursor position, checked."""
    try:
        value, key = position
        return float(value), str(key)
    except (TypeError, ValueError):
        raise InvalidInput("cursor is not valid for this query", field="cursor") from None


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")


def _sort_key(sort: str) -> Callable[[tuple[str, float | None]], tuple[Any, ...]]:
    """Stable orders: nulls last, ties broken by key."""
    if sort == "key":
        return lambda row: (row[0],)
    if sort == "-key":
        return lambda row: (_desc(row[0]),)
    sign = -1.0 if sort == "-value" else 1.0
    return lambda row: (row[1] is None, 0.0 if row[1] is None else sign * row[1], row[0])


def _desc(text: str) -> list[int]:
    return [-ord(c) for c in text] + [1]
