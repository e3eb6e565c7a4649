"""The query services over a fake store: typed answers with hand-computed values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from hypemeter.clock import FixedClock
from hypemeter.errors import InvalidInput
from hypemeter.events.model import MetricCatalog
from hypemeter.metrics.model import DAY_US, HOUR_US, Grain, TimeRange, floor_to, parse_instant
from hypemeter.metrics.model.answers import (
    AggregatePage,
    GroupValue,
    InfluencerTotals,
    RankedInfluencer,
)
from hypemeter.metrics.queries import (
    Answer,
    CounterQuery,
    CounterRow,
    Filters,
    GaugeQuery,
    GaugeRow,
    TrendingQuery,
    TrendingRow,
)
from hypemeter.metrics.service import MetricsService, RangeParams

T0 = parse_instant("2026-11-18T10:00:00Z", "t0")
NOW = T0 + 5 * HOUR_US


@dataclass(frozen=True)
class Event:
    influencer_id: str
    platform: str
    campaign_id: str | None
    metric: str
    value: float
    ts_us: int


EVENTS = [
    Event("inf-a", "instagram", "c-1", "likes", 3, T0 + 60_000_000),
    Event("inf-a", "instagram", "c-1", "clicks", 2, T0 + 90_000_000),
    Event("inf-a", "tiktok", None, "likes", 4.5, T0 + HOUR_US + 5),
    Event("inf-b", "instagram", "c-1", "likes", 1, T0 + 2 * HOUR_US),
    Event("inf-b", "instagram", "c-1", "impressions", 4, T0 + 2 * HOUR_US),
    Event("inf-c", "x", "c-2", "likes", 7, T0 + 2 * HOUR_US),
]


@dataclass
class FakeStore:
    """Brute-force sums over EVENTS; no gauges, users or matrix."""

    events: list[Event]
    overrides: dict[tuple[str, str], float] = field(default_factory=dict)
    trending_rows: list[TrendingRow] = field(default_factory=list)
    trending_asked: list[TrendingQuery] = field(default_factory=list)

    async def counters(self, tenant_id: str, query: CounterQuery) -> Answer[CounterRow]:
        sums: dict[tuple[tuple[str, ...], int | None, str], float] = {}
        seen = 0
        for e in self.events:
            f = query.filters
            if not (query.start_us <= e.ts_us < query.end_us) or e.metric not in query.metrics:
                continue
            if f.influencer_id not in (None, e.influencer_id) or f.platform not in (
                None,
                e.platform,
            ):
                continue
            if f.campaign_id not in (None, e.campaign_id):
                continue
            key = tuple(getattr(e, d) for d in query.by)
            if None in key:
                continue
            bucket = None if query.grain is None else floor_to(e.ts_us, query.grain.us)
            sums[(key, bucket, e.metric)] = sums.get((key, bucket, e.metric), 0.0) + e.value
            seen += 1
        rows = [CounterRow(k, b, m, v, 1) for (k, b, m), v in sums.items()]
        return Answer(rows, seen)

    async def gauges(self, tenant_id: str, query: GaugeQuery) -> Answer[GaugeRow]:
        return Answer([], 0)

    async def unique_users(self, *args: Any, **kwargs: Any) -> Answer[Any]:
        return Answer([], 0)

    async def emv_rates(self, tenant_id: str) -> dict[tuple[str, str], float]:
        return dict(self.overrides)

    async def set_emv_rates(
        self, tenant_id: str, rates: dict[tuple[str, str], float | None]
    ) -> None:
        for key, value in rates.items():
            if value is None:
                self.overrides.pop(key, None)
            else:
                self.overrides[key] = value

    async def counter_matrix(self, tenant_id: str, query: CounterQuery) -> None:
        return None

    async def trending(self, tenant_id: str, query: TrendingQuery) -> Answer[TrendingRow]:
        self.trending_asked.append(query)
        return Answer(self.trending_rows[: query.limit], 11)


def service(store: FakeStore | None = None) -> MetricsService:
    fake = store or FakeStore(list(EVENTS))
    catalog = MetricCatalog()
    return MetricsService(
        fake,  # type: ignore[arg-type]
        lambda tenant: catalog,
        FixedClock(NOW),
        retention_days=30,
    )


RANGE = RangeParams("2026-11-18T10:00:00Z", "2026-11-18T13:00:00Z")


async def test_series_fills_every_bucket_and_totals_derived_metrics() -> None:
    answer = await service().series(
        "acme", filters=Filters(), params=RANGE, metrics="likes,ctr", granularity="hour"
    )
    assert answer.time_range == TimeRange(T0, T0 + 3 * HOUR_US)
    assert answer.granularity is Grain.HOUR
    assert answer.metrics == ("likes", "ctr")
    assert answer.values == {"likes": [3, 4.5, 8], "ctr": [None, None, 0]}
    assert answer.totals == {"likes": 15.5, "ctr": 50}
    assert answer.influencers is None
    assert answer.statistics.rows_read == 6  # the events summed


async def test_series_of_a_campaign_breaks_totals_down_per_influencer() -> None:
    answer = await service().series(
        "acme",
        filters=Filters(campaign_id="c-1"),
        params=RANGE,
        metrics="likes",
        granularity="hour",
        breakdown=True,
    )
    assert answer.values == {"likes": [3, 0, 1]}
    assert answer.totals == {"likes": 4}
    assert answer.influencers == (
        InfluencerTotals("inf-a", {"likes": 3}),
        InfluencerTotals("inf-b", {"likes": 1}),
    )


async def test_aggregate_pages_follow_the_cursor() -> None:
    metrics = service()
    first = await metrics.aggregate(
        "acme",
        metric="likes",
        group_by="influencer",
        params=RANGE,
        filters=Filters(),
        sort="-value",
        limit=2,
        cursor=None,
    )
    assert isinstance(first, AggregatePage)
    assert first.rows == (GroupValue("inf-a", 7.5), GroupValue("inf-c", 7.0))
    assert first.next_cursor is not None
    second = await metrics.aggregate(
        "acme",
        metric="likes",
        group_by="influencer",
        params=RANGE,
        filters=Filters(),
        sort="-value",
        limit=2,
        cursor=first.next_cursor,
    )
    assert second.rows == (GroupValue("inf-b", 1.0),)
    assert second.next_cursor is None


async def test_aggregate_by_day_and_platform_filter() -> None:
    page = await service().aggregate(
        "acme",
        metric="likes",
        group_by="day",
        params=RANGE,
        filters=Filters(platform="instagram"),
        sort="key",
        limit=10,
        cursor=None,
    )
    assert page.rows == (GroupValue("2026-11-18", 4.0),)


async def test_leaderboard_ranks_continue_across_pages() -> None:
    metrics = service()
    first = await metrics.leaderboard(
        "acme", metric="likes", params=RANGE, platform=None, limit=1, cursor=None
    )
    assert first.rows == (RankedInfluencer("inf-a", 7.5, 1),)
    second = await metrics.leaderboard(
        "acme", metric="likes", params=RANGE, platform=None, limit=1, cursor=first.next_cursor
    )
    assert second.rows == (RankedInfluencer("inf-c", 7.0, 2),)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"sort": "up"}, "sort"),
        ({"limit": 0}, "limit"),
        ({"metric": "likes,clicks"}, "metric"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_aggregate_names_the_bad_field(overrides: dict[str, Any], field: str) -> None:
    params: dict[str, Any] = {
        "metric": "likes",
        "group_by": "platform",
        "params": RANGE,
        "filters": Filters(),
        "sort": "-value",
        "limit": 10,
        "cursor": None,
    }
    with pytest.raises(InvalidInput) as raised:
        await service().aggregate("acme", **{**params, **overrides})
    assert raised.value.field == field


async def test_trending_asks_one_row_more_than_a_page_and_reads_to_the_hour() -> None:
    rows = [TrendingRow(f"post-{i}", 10 - i, 20.0 - i, T0, None, ()) for i in range(3)]
    store = FakeStore([], trending_rows=rows)
    page = await service(store).trending(
        "acme", hours_back=24, platform="x", min_interactions=2, limit=2, cursor=None
    )
    assert page.rows == tuple(rows[:2])
    assert page.next_cursor is not None
    assert page.statistics.rows_read == 11
    asked = store.trending_asked[0]
    assert (asked.end_us, asked.end_us - asked.start_us) == (T0 + 6 * HOUR_US, DAY_US)
    assert (asked.platform, asked.min_interactions, asked.limit, asked.after) == ("x", 2, 3, None)
    await service(store).trending(
        "acme", hours_back=24, platform="x", min_interactions=2, limit=2, cursor=page.next_cursor
    )
    assert store.trending_asked[-1].after == (19.0, "post-1")


async def test_emv_table_lists_defaults_and_the_tenants_own_values() -> None:
    store = FakeStore([])
    metrics = service(store)
    table = await metrics.set_emv_rates("acme", {"Instagram": {"likes": 0.3}, "x": {"views": 0}})
    assert store.overrides == {("instagram", "likes"): 0.3, ("x", "views"): 0.0}
    assert table.custom == (("instagram", "likes"), ("x", "views"))
    assert ("instagram", "likes", 0.3) in table.rates
    assert ("instagram", "comments", 0.5) in table.rates
    assert table.rates == tuple(sorted(table.rates))
    with pytest.raises(InvalidInput) as raised:
        await metrics.set_emv_rates("acme", {"x": {"followers": 1.0}})
    assert raised.value.field == "rates.x.followers"
