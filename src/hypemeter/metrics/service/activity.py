"""Activity rankings: trending content over the last hours and audience users since a
time, both by total engagement, in pages with opaque cursors."""

from __future__ import annotations

from hypemeter.errors import InvalidInput
from hypemeter.metrics.model import (
    DAY_US,
    ENGAGEMENT,
    HOUR_US,
    ceil_to,
    check_limit,
    decode_cursor,
    encode_cursor,
    parse_instant,
    value_key_position,
)
from hypemeter.metrics.model.answers import TrendingPage, UserActivityPage
from hypemeter.metrics.queries import TrendingQuery
from hypemeter.metrics.service.frames import FrameReader, Stats


class ActivityQueries:
    """Trending content and active users, each computed in the tenant of the caller."""

    def __init__(self, reader: FrameReader) -> None:
        self._reader = reader

    async def trending(
        self,
        tenant_id: str,
        *,
        hours_back: int,
        platform: str | None,
        min_interactions: int,
        limit: int,
        cursor: str | None,
    ) -> TrendingPage:
        """Content items with at least ``min_interactions`` engagement events in the last
        ``hours_back`` hours (to the end of the current hour). Raises InvalidInput."""
        reader, stats = self._reader, Stats()
        check_limit(limit)
        if hours_back < 1 or hours_back * HOUR_US > reader.retention_us:
            raise InvalidInput(
                f"hours_back must be between 1 and {reader.retention_us // HOUR_US} (retention)",
                field="hours_back",
            )
        if min_interactions < 0:
            raise InvalidInput("min_interactions cannot be negative", field="min_interactions")
        end_us = ceil_to(reader.clock.now_us() + 1, HOUR_US)
        scope = f"trending|{tenant_id}|{hours_back}|{platform}|{min_interactions}"
        after = value_key_position(decode_cursor(cursor, scope)) if cursor else None
        answer = await reader.store.trending(
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
        next_cursor = encode_cursor(scope, next_key) if next_key is not None else None
        return TrendingPage(tuple(page), next_cursor, stats.result())

    async def user_activity(
        self,
        tenant_id: str,
        *,
        since: str | None,
        min_engagement: float,
        limit: int,
        cursor: str | None,
    ) -> UserActivityPage:
        """Users with at least ``min_engagement`` since ``since`` (default: 24 hours ago),
        most engaged first. Raises InvalidInput."""
        reader, stats = self._reader, Stats()
        check_limit(limit)
        now_us = reader.clock.now_us()
        since_us = parse_instant(since, "since") if since else now_us - DAY_US
        if since_us < now_us - reader.retention_us:
            raise InvalidInput(
                f"since is past the retention of {reader.retention_us // DAY_US} days",
                field="since",
            )
        scope = f"users|{tenant_id}|{since_us}|{min_engagement}"
        after = value_key_position(decode_cursor(cursor, scope)) if cursor else None
        answer = await reader.store.user_activity(
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
        next_cursor = (
            encode_cursor(scope, [page[-1].engagement, page[-1].user_id]) if more and page else None
        )
        return UserActivityPage(tuple(page), next_cursor, stats.result())
