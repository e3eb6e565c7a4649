"""Groupings: one metric per platform, influencer, campaign, content or day, and the
leaderboard of influencers, in stable orders and pages with opaque cursors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypemeter.errors import InvalidInput
from hypemeter.metrics.model import (
    FOLLOWER_BASED,
    Frame,
    Grain,
    bucket_starts,
    check_limit,
    choose_grain,
    decode_cursor,
    encode_cursor,
    format_instant,
    metric_value,
    page_after,
)
from hypemeter.metrics.model.answers import (
    AggregatePage,
    GroupValue,
    LeaderboardPage,
    RankedInfluencer,
)
from hypemeter.metrics.queries import Filters
from hypemeter.metrics.service.frames import FrameReader, RangeParams, Slice, Stats

GROUP_BY = {
    "platform": "platform",
    "influencer": "influencer_id",
    "campaign": "campaign_id",
    "content": "content_id",
    "day": None,
}
SORTS = ("-value", "value", "key", "-key")
Row = tuple[str, float | None]


class GroupQueries:
    """Aggregates and leaderboards, each computed in the tenant of the caller."""

    def __init__(self, reader: FrameReader) -> None:
        self._reader = reader

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
    ) -> AggregatePage:
        """One page of ``metric`` per group (default range: 24 hours). Raises InvalidInput."""
        stats = Stats()
        page, next_cursor, _ = await self._grouped(
            tenant_id, metric, group_by, params, filters, sort, limit, cursor, "24h", stats
        )
        rows = tuple(GroupValue(k, v) for k, v in page)
        return AggregatePage(rows, next_cursor, stats.result())

    async def leaderboard(
        self,
        tenant_id: str,
        *,
        metric: str,
        params: RangeParams,
        platform: str | None,
        limit: int,
        cursor: str | None,
    ) -> LeaderboardPage:
        """One page of influencers by ``metric``, highest first (default range: 7 days)."""
        stats = Stats()
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
        rows = tuple(RankedInfluencer(k, v, offset + i + 1) for i, (k, v) in enumerate(page))
        return LeaderboardPage(rows, next_cursor, stats.result())

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
        stats: Stats,
    ) -> tuple[list[Row], str | None, int]:
        """One page of (key, value) in a stable order, the next cursor, rows before the page."""
        if group_by not in GROUP_BY:
            raise InvalidInput(
                f"group_by {group_by!r} is not one of {', '.join(GROUP_BY)}", field="group_by"
            )
        if sort not in SORTS:
            raise InvalidInput(f"sort {sort!r} is not one of {', '.join(SORTS)}", field="sort")
        check_limit(limit)
        reader = self._reader
        time_range = reader.time_range(params, default_period)
        plan, catalog, rates = await reader.plan(tenant_id, metric, "metric")
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
        frames = await reader.frames(tenant_id, time_range, plan, filters, Slice(dim, grain), stats)
        rows: list[Row] = []
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


def _sort_key(sort: str) -> Callable[[Row], tuple[Any, ...]]:
    """Stable orders: nulls last, ties broken by key."""
    if sort == "key":
        return lambda row: (row[0],)
    if sort == "-key":
        return lambda row: (_desc(row[0]),)
    sign = -1.0 if sort == "-value" else 1.0
    return lambda row: (row[1] is None, 0.0 if row[1] is None else sign * row[1], row[0])


def _desc(text: str) -> list[int]:
    return [-ord(c) for c in text] + [1]
