"""MetricsStore contract: rollups and the queries over them; run against every backend.

Every answer must equal one over the raw events, whichever parts of a range the
rollups cover and whether the latest commits are folded into them yet. The
embedded store folds in the background, so each check runs once as committed and
once more after ``fold_rollups``. Datasets are small; each expected value is
worked out by hand beside its query (values are powers of two where sums mix,
so that a total names the events in it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from hypemeter.events.batch import EventBatch
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.events.ports import EventStore
from hypemeter.metrics.model import DAY_US, ENGAGEMENT, HOUR_US, MINUTE_US, AccountReadings, Grain
from hypemeter.metrics.ports import MetricsReader, MetricsStore
from hypemeter.metrics.queries import (
    CounterQuery,
    Filters,
    GaugeQuery,
    TrendingQuery,
    TrendingRow,
    UserRow,
)

from .cached_backend import CachedBackend

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z, the harness clock
DAY0 = NOW_US - NOW_US % DAY_US - 2 * DAY_US  # 2026-11-18T00:00:00Z
MINUTE, HOUR, DAY = Grain.MINUTE, Grain.HOUR, Grain.DAY


@pytest.fixture(params=["store", "cached"])
def wrapping(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store_backend(store_backend: Any, wrapping: str) -> AsyncIterator[Any]:
    """Every backend's metrics store as it is, and behind the query cache (fed by the
    change feed, as the app wires it)."""
    if wrapping == "store":
        yield store_backend
        return
    cached = CachedBackend(store_backend)
    yield cached
    for cache in cached._caches:
        await cache.aclose()


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """A moment of the datasets: day 0 is 2026-11-18, day 2 the harness's today."""
    return DAY0 + day * DAY_US + hour * HOUR_US + minute * MINUTE_US + second * 1_000_000


def event(
    event_id: str,
    influencer: str,
    platform: str,
    metric: str,
    value: float,
    ts_us: int,
    **fields: Any,
) -> EventIn:
    return EventIn(
        event_id=event_id,
        influencer_id=influencer,
        platform=platform,
        metric=metric,
        value=value,
        ts=from_epoch_us(ts_us),
        **fields,
    )


async def append(store: EventStore, tenant: str, events: Sequence[EventIn]) -> int:
    """Append one batch; the seq of its commit."""
    stamps = [to_epoch_us(e.ts) for e in events if e.ts is not None]
    result = await store.append(tenant, EventBatch.from_events(list(events), stamps))
    return result.seq


async def both_ways(
    store_backend: Any, metrics: MetricsStore, check: Callable[[], Awaitable[object]]
) -> None:
    """Run ``check`` as committed, then once every commit is folded into the rollups:
    it asserts the expected answers, which must be the same both times."""
    as_committed = await check()
    await store_backend.fold_rollups(metrics)
    assert await check() == as_committed


# -- counters ----------------------------------------------------------------------

# (event id, influencer, platform, metric, value, ts, campaign, content)
COUNTED = (
    ("e1", "ana", "instagram", "likes", 1, at(0, 10, 5), "c1", "p1"),
    ("e2", "ana", "instagram", "likes", 2, at(0, 10, 5, 30), "c1", "p1"),
    ("e3", "ana", "tiktok", "likes", 4, at(0, 10, 45), None, "p2"),
    ("e4", "ben", "instagram", "likes", 8, at(0, 23, 59, 59), "c2", None),
    ("e5", "ben", "tiktok", "comments", 16, at(1), "c1", "p3"),
    ("e6", "ana", "instagram", "likes", 32, at(1, 13, 30), "c1", "p1"),
    ("e7", "ben", "instagram", "views", 64, at(1, 13, 30), None, None),
    ("e8", "ana", "tiktok", "comments", 128, at(2, 9, 15), "c2", "p2"),
    ("e9", "ben", "tiktok", "likes", 256, at(2, 9, 15, 59), None, "p3"),
)
# Appended last, though hours older than every event around it.
LATE = ("late", "ana", "instagram", "likes", 512, at(0, 3), None, None)
COUNTED_METRICS = ("likes", "comments", "views")
WHOLE_DAYS = (at(0), at(3))
WHOLE_HOURS = (at(0, 10), at(1, 14))
# Starts between e1 and e2 (inside a minute), ends between e8 and e9 (inside an hour).
RAGGED = (at(0, 10, 5, 15), at(2, 9, 15, 30))
# Starts inside an hour, ends on e6 and e7, which it leaves out.
TO_E6 = (at(0, 10, 30), at(1, 13, 30))
# Starts on e4 exactly, which it keeps, and ends on e6 and e7.
FROM_E4 = (at(0, 23, 59, 59), at(1, 13, 30))
# Whole hours but for half a minute at either end (e4 is in the first half minute).
NEAR_HOURS = (at(0, 23, 59, 30), at(2, 0, 0, 30))

CounterSums = dict[tuple[tuple[str, ...], int | None, str], tuple[float, int]]


def counted_event(row: tuple[Any, ...], value: float | None = None) -> EventIn:
    event_id, influencer, platform, metric, worth, ts, campaign, content = row
    return event(
        event_id,
        influencer,
        platform,
        metric,
        worth if value is None else value,
        ts,
        campaign_id=campaign,
        content_id=content,
    )


async def load_counted(store: EventStore, tenant: str) -> None:
    """COUNTED in three commits (the third repeating e6 with another value), then LATE."""
    await append(store, tenant, [counted_event(row) for row in COUNTED[:4]])
    await append(store, tenant, [counted_event(row) for row in COUNTED[4:7]])
    await append(
        store,
        tenant,
        [*(counted_event(row) for row in COUNTED[7:]), counted_event(COUNTED[5], 1000)],
    )
    await append(store, tenant, [counted_event(LATE)])


def counters(
    span: tuple[int, int],
    *,
    by: tuple[str, ...] = (),
    grain: Grain | None = None,
    metrics: tuple[str, ...] = COUNTED_METRICS,
    **filters: str,
) -> CounterQuery:
    return CounterQuery(span[0], span[1], metrics, Filters(**filters), by, grain)


def sums(*rows: tuple[Any, ...]) -> CounterSums:
    """(group key, bucket, metric, total, events) rows as the dict ``summed`` gives."""
    return {(key, bucket, metric): (total, events) for key, bucket, metric, total, events in rows}


async def summed(reader: MetricsReader, tenant: str, query: CounterQuery) -> CounterSums:
    answer = await reader.counters(tenant, query)
    found: CounterSums = {}
    for row in answer.rows:
        assert (row.key, row.bucket, row.metric) not in found, f"{row} is not one group"
        found[(row.key, row.bucket, row.metric)] = (row.total, row.events)
    return found


CounterCase = tuple[str, CounterQuery, CounterSums]

RANGE_CASES: list[CounterCase] = [
    (
        "whole days",
        counters(WHOLE_DAYS),
        sums(
            ((), None, "likes", 815, 7), ((), None, "comments", 144, 2), ((), None, "views", 64, 1)
        ),
    ),
    (
        "whole days by day",
        counters(WHOLE_DAYS, grain=DAY),
        sums(
            ((), at(0), "likes", 1 + 2 + 4 + 8 + 512, 5),
            ((), at(1), "comments", 16, 1),
            ((), at(1), "likes", 32, 1),
            ((), at(1), "views", 64, 1),
            ((), at(2), "comments", 128, 1),
            ((), at(2), "likes", 256, 1),
        ),
    ),
    (
        "whole hours",
        counters(WHOLE_HOURS),
        sums(
            ((), None, "likes", 1 + 2 + 4 + 8 + 32, 5),
            ((), None, "comments", 16, 1),
            ((), None, "views", 64, 1),
        ),
    ),
    (
        "whole hours by hour",
        counters(WHOLE_HOURS, grain=HOUR),
        sums(
            ((), at(0, 10), "likes", 7, 3),
            ((), at(0, 23), "likes", 8, 1),
            ((), at(1, 0), "comments", 16, 1),
            ((), at(1, 13), "likes", 32, 1),
            ((), at(1, 13), "views", 64, 1),
        ),
    ),
    (
        "ragged",
        counters(RAGGED),
        sums(
            ((), None, "likes", 2 + 4 + 8 + 32, 4),
            ((), None, "comments", 144, 2),
            ((), None, "views", 64, 1),
        ),
    ),
    (
        # A bucket is where its events fall, even when the range starts inside it.
        "ragged by minute",
        counters(RAGGED, grain=MINUTE),
        sums(
            ((), at(0, 10, 5), "likes", 2, 1),
            ((), at(0, 10, 45), "likes", 4, 1),
            ((), at(0, 23, 59), "likes", 8, 1),
            ((), at(1, 0), "comments", 16, 1),
            ((), at(1, 13, 30), "likes", 32, 1),
            ((), at(1, 13, 30), "views", 64, 1),
            ((), at(2, 9, 15), "comments", 128, 1),
        ),
    ),
    (
        "ragged by hour",
        counters(RAGGED, grain=HOUR),
        sums(
            ((), at(0, 10), "likes", 6, 2),
            ((), at(0, 23), "likes", 8, 1),
            ((), at(1, 0), "comments", 16, 1),
            ((), at(1, 13), "likes", 32, 1),
            ((), at(1, 13), "views", 64, 1),
            ((), at(2, 9), "comments", 128, 1),
        ),
    ),
    (
        "ragged by day",
        counters(RAGGED, grain=DAY),
        sums(
            ((), at(0), "likes", 14, 3),
            ((), at(1), "comments", 16, 1),
            ((), at(1), "likes", 32, 1),
            ((), at(1), "views", 64, 1),
            ((), at(2), "comments", 128, 1),
        ),
    ),
    (
        "the end is left out",
        counters(TO_E6),
        sums(((), None, "likes", 4 + 8, 2), ((), None, "comments", 16, 1)),
    ),
    (
        "the start is kept",
        counters(FROM_E4, grain=MINUTE),
        sums(((), at(0, 23, 59), "likes", 8, 1), ((), at(1), "comments", 16, 1)),
    ),
    (
        "only the metrics asked for",
        counters(WHOLE_DAYS, grain=DAY, metrics=("comments", "shares")),
        sums(((), at(1), "comments", 16, 1), ((), at(2), "comments", 128, 1)),
    ),
    ("an empty range", counters((at(1, 1), at(1, 13))), {}),
]

GROUP_CASES: list[CounterCase] = [
    (
        "by platform, by day",
        counters(WHOLE_DAYS, by=("platform",), grain=DAY),
        sums(
            (("instagram",), at(0), "likes", 1 + 2 + 8 + 512, 4),
            (("tiktok",), at(0), "likes", 4, 1),
            (("tiktok",), at(1), "comments", 16, 1),
            (("instagram",), at(1), "likes", 32, 1),
            (("instagram",), at(1), "views", 64, 1),
            (("tiktok",), at(2), "comments", 128, 1),
            (("tiktok",), at(2), "likes", 256, 1),
        ),
    ),
    (
        "by platform, ragged",
        counters(RAGGED, by=("platform",)),
        sums(
            (("instagram",), None, "likes", 2 + 8 + 32, 3),
            (("instagram",), None, "views", 64, 1),
            (("tiktok",), None, "likes", 4, 1),
            (("tiktok",), None, "comments", 144, 2),
        ),
    ),
    (
        "by influencer, by hour",
        counters(WHOLE_HOURS, by=("influencer_id",), grain=HOUR),
        sums(
            (("ana",), at(0, 10), "likes", 7, 3),
            (("ben",), at(0, 23), "likes", 8, 1),
            (("ben",), at(1, 0), "comments", 16, 1),
            (("ana",), at(1, 13), "likes", 32, 1),
            (("ben",), at(1, 13), "views", 64, 1),
        ),
    ),
    (
        # e3, e7, e9 and the late event have no campaign: left out.
        "by campaign",
        counters(WHOLE_DAYS, by=("campaign_id",)),
        sums(
            (("c1",), None, "likes", 1 + 2 + 32, 3),
            (("c1",), None, "comments", 16, 1),
            (("c2",), None, "likes", 8, 1),
            (("c2",), None, "comments", 128, 1),
        ),
    ),
    (
        "by campaign, ragged, by minute",
        counters(RAGGED, by=("campaign_id",), grain=MINUTE),
        sums(
            (("c1",), at(0, 10, 5), "likes", 2, 1),
            (("c2",), at(0, 23, 59), "likes", 8, 1),
            (("c1",), at(1, 0), "comments", 16, 1),
            (("c1",), at(1, 13, 30), "likes", 32, 1),
            (("c2",), at(2, 9, 15), "comments", 128, 1),
        ),
    ),
    (
        # e4, e7 and the late event have no content: left out.
        "by content, by day",
        counters(WHOLE_DAYS, by=("content_id",), grain=DAY),
        sums(
            (("p1",), at(0), "likes", 3, 2),
            (("p2",), at(0), "likes", 4, 1),
            (("p3",), at(1), "comments", 16, 1),
            (("p1",), at(1), "likes", 32, 1),
            (("p2",), at(2), "comments", 128, 1),
            (("p3",), at(2), "likes", 256, 1),
        ),
    ),
    (
        "by content, ragged, by minute",
        counters(RAGGED, by=("content_id",), grain=MINUTE),
        sums(
            (("p1",), at(0, 10, 5), "likes", 2, 1),
            (("p2",), at(0, 10, 45), "likes", 4, 1),
            (("p3",), at(1, 0), "comments", 16, 1),
            (("p1",), at(1, 13, 30), "likes", 32, 1),
            (("p2",), at(2, 9, 15), "comments", 128, 1),
        ),
    ),
    (
        "by content, whole hours",
        counters(WHOLE_HOURS, by=("content_id",)),
        sums(
            (("p1",), None, "likes", 1 + 2 + 32, 3),
            (("p2",), None, "likes", 4, 1),
            (("p3",), None, "comments", 16, 1),
        ),
    ),
    (
        "by influencer and platform",
        counters(WHOLE_DAYS, by=("influencer_id", "platform")),
        sums(
            (("ana", "instagram"), None, "likes", 1 + 2 + 32 + 512, 4),
            (("ana", "tiktok"), None, "likes", 4, 1),
            (("ana", "tiktok"), None, "comments", 128, 1),
            (("ben", "instagram"), None, "likes", 8, 1),
            (("ben", "instagram"), None, "views", 64, 1),
            (("ben", "tiktok"), None, "comments", 16, 1),
            (("ben", "tiktok"), None, "likes", 256, 1),
        ),
    ),
]

FILTER_CASES: list[CounterCase] = [
    (
        "influencer",
        counters(WHOLE_DAYS, influencer_id="ben"),
        sums(
            ((), None, "likes", 8 + 256, 2),
            ((), None, "comments", 16, 1),
            ((), None, "views", 64, 1),
        ),
    ),
    (
        # Whole hours of one influencer: what the embedded store's hot index answers.
        "influencer, by platform, whole hours",
        counters(WHOLE_HOURS, by=("platform",), influencer_id="ana"),
        sums((("instagram",), None, "likes", 1 + 2 + 32, 3), (("tiktok",), None, "likes", 4, 1)),
    ),
    (
        "influencer, ragged, by hour",
        counters(RAGGED, grain=HOUR, influencer_id="ben"),
        sums(
            ((), at(0, 23), "likes", 8, 1),
            ((), at(1, 0), "comments", 16, 1),
            ((), at(1, 13), "views", 64, 1),
        ),
    ),
    (
        "influencer, whole hours but for seconds, by hour",
        counters(NEAR_HOURS, grain=HOUR, influencer_id="ben"),
        sums(
            ((), at(0, 23), "likes", 8, 1),
            ((), at(1, 0), "comments", 16, 1),
            ((), at(1, 13), "views", 64, 1),
        ),
    ),
    (
        "platform, by day",
        counters(WHOLE_DAYS, grain=DAY, platform="tiktok"),
        sums(
            ((), at(0), "likes", 4, 1),
            ((), at(1), "comments", 16, 1),
            ((), at(2), "comments", 128, 1),
            ((), at(2), "likes", 256, 1),
        ),
    ),
    (
        "campaign, by hour",
        counters(WHOLE_HOURS, grain=HOUR, campaign_id="c1"),
        sums(
            ((), at(0, 10), "likes", 3, 2),
            ((), at(1, 0), "comments", 16, 1),
            ((), at(1, 13), "likes", 32, 1),
        ),
    ),
    (
        "content, ragged",
        counters(RAGGED, content_id="p2"),
        sums(((), None, "likes", 4, 1), ((), None, "comments", 128, 1)),
    ),
    (
        "influencer and platform, by platform, ragged, by hour",
        counters(RAGGED, by=("platform",), grain=HOUR, influencer_id="ana", platform="instagram"),
        sums(
            (("instagram",), at(0, 10), "likes", 2, 1), (("instagram",), at(1, 13), "likes", 32, 1)
        ),
    ),
    (
        "influencer and campaign",
        counters(WHOLE_DAYS, influencer_id="ana", campaign_id="c2"),
        sums(((), None, "comments", 128, 1)),
    ),
    (
        "content and campaign, by influencer, by day",
        counters(WHOLE_DAYS, by=("influencer_id",), grain=DAY, content_id="p1", campaign_id="c1"),
        sums((("ana",), at(0), "likes", 3, 2), (("ana",), at(1), "likes", 32, 1)),
    ),
    ("a platform without events", counters(WHOLE_DAYS, platform="youtube"), {}),
]

LATE_CASES: list[CounterCase] = [
    (
        "the late event is in its own bucket",
        counters((at(0), at(1)), grain=HOUR),
        sums(
            ((), at(0, 3), "likes", 512, 1),
            ((), at(0, 10), "likes", 7, 3),
            ((), at(0, 23), "likes", 8, 1),
        ),
    ),
    (
        "the repeated e6 counts once, with its first value",
        counters((at(1, 13), at(1, 14)), metrics=("likes",)),
        sums(((), None, "likes", 32, 1)),
    ),
]


async def check_counters(
    reader: MetricsReader, tenant: str, cases: list[CounterCase]
) -> list[CounterSums]:
    found = []
    for name, query, expected in cases:
        answer = await summed(reader, tenant, query)
        assert answer == expected, name
        found.append(answer)
    return found


async def test_counters_over_whole_and_ragged_ranges(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    assert store_backend.clock.now_us() == NOW_US
    await load_counted(event_store, "acme")
    await both_ways(
        store_backend, metrics_store, lambda: check_counters(metrics_store, "acme", RANGE_CASES)
    )


async def test_counters_grouped_by_each_dimension(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await load_counted(event_store, "acme")
    await both_ways(
        store_backend, metrics_store, lambda: check_counters(metrics_store, "acme", GROUP_CASES)
    )


async def test_counters_filtered_by_each_dimension(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await load_counted(event_store, "acme")
    await both_ways(
        store_backend, metrics_store, lambda: check_counters(metrics_store, "acme", FILTER_CASES)
    )


async def test_late_events_duplicates_and_tenants(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await load_counted(event_store, "acme")
    # Another tenant's events with the same ids are its own, not duplicates.
    await append(
        event_store, "other", [counted_event(COUNTED[0], 1024), counted_event(COUNTED[5], 2048)]
    )

    async def check() -> list[CounterSums]:
        found = await check_counters(metrics_store, "acme", LATE_CASES)
        other = await summed(metrics_store, "other", counters(WHOLE_DAYS, by=("platform",)))
        assert other == sums((("instagram",), None, "likes", 1024 + 2048, 2))
        assert await summed(metrics_store, "nobody", counters(WHOLE_DAYS)) == {}
        return [*found, other]

    await both_ways(store_backend, metrics_store, check)


def brute_force(query: CounterQuery) -> CounterSums:
    """The answer to ``query`` summed event by event over what load_counted keeps."""
    found: dict[tuple[tuple[str, ...], int | None, str], list[float]] = {}
    wanted = {k: v for k, v in dataclasses.asdict(query.filters).items() if v is not None}
    for _, influencer, platform, metric, value, ts, campaign, content in (*COUNTED, LATE):
        dims = {
            "influencer_id": influencer,
            "platform": platform,
            "campaign_id": campaign,
            "content_id": content,
        }
        key = tuple(dims[d] for d in query.by)
        if (
            metric not in query.metrics
            or not query.start_us <= ts < query.end_us
            or any(dims[k] != v for k, v in wanted.items())
            or None in key
        ):
            continue
        bucket = None if query.grain is None else ts - ts % query.grain.us
        acc = found.setdefault((key, bucket, metric), [0.0, 0])
        acc[0] += value
        acc[1] += 1
    return {group: (total, int(events)) for group, (total, events) in found.items()}


async def test_counters_equal_an_event_by_event_sum_for_every_combination(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    """Each grouping with each grain, filter and kind of range, against ``brute_force``."""
    await load_counted(event_store, "acme")
    queries = [
        counters(span, by=by, grain=grain, **filters)
        for span in (WHOLE_DAYS, WHOLE_HOURS, RAGGED, TO_E6, FROM_E4, NEAR_HOURS)
        for by in ((), ("platform",), ("influencer_id",), ("campaign_id",), ("content_id",))
        for grain in (None, MINUTE, HOUR, DAY)
        for filters in (
            {},
            {"influencer_id": "ana"},
            {"platform": "tiktok"},
            {"campaign_id": "c1"},
            {"content_id": "p2"},
        )
    ]

    async def check() -> list[CounterSums]:
        found = [await summed(metrics_store, "acme", query) for query in queries]
        for query, answer in zip(queries, found, strict=True):
            assert answer == brute_force(query), query
        return found

    await both_ways(store_backend, metrics_store, check)


async def check_matrix(metrics: MetricsStore, tenant: str, query: CounterQuery) -> None:
    """A matrix, when the backend answers ``query`` as one, holds its counters' sums."""
    matrix = await metrics.counter_matrix(tenant, query)
    if matrix is None:
        return
    assert query.grain is not None
    assert matrix.grain_us == query.grain.us
    assert matrix.origin_us % matrix.grain_us == 0
    assert matrix.origin_us <= query.start_us
    # Every bucket of the range is there, and none past its end.
    buckets = range(matrix.origin_us, query.end_us, matrix.grain_us)
    assert {metric: len(values) for metric, values in matrix.values.items()} == dict.fromkeys(
        query.metrics, len(buckets)
    )
    expected = {metric: dict.fromkeys(buckets, 0.0) for metric in query.metrics}
    for row in (await metrics.counters(tenant, query)).rows:
        assert row.bucket is not None
        expected[row.metric][row.bucket] += row.total
    found = {
        metric: dict(zip(buckets, values.tolist(), strict=True))
        for metric, values in matrix.values.items()
    }
    assert found == expected, query


async def test_counter_matrix_is_none_or_the_counters_as_arrays(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await load_counted(event_store, "acme")
    queries = [
        counters(RAGGED, grain=HOUR, influencer_id="ana"),
        counters(WHOLE_HOURS, grain=HOUR, influencer_id="ben", platform="instagram"),
        counters(WHOLE_HOURS, grain=DAY, influencer_id="ana", campaign_id="c1"),
        counters(TO_E6, grain=HOUR, influencer_id="ben", metrics=("likes", "saves")),
        counters(WHOLE_DAYS, grain=HOUR, influencer_id="ben"),
        counters(NEAR_HOURS, grain=HOUR, influencer_id="ben", campaign_id="c2"),
        counters(NEAR_HOURS, grain=DAY, influencer_id="ben", platform="tiktok"),
        counters(RAGGED, grain=MINUTE, influencer_id="ana"),
        counters(WHOLE_HOURS, grain=HOUR),
    ]
    # Whether a backend has a fast way may change once it has folded: ask both times.
    for query in queries:
        await check_matrix(metrics_store, "acme", query)
    await store_backend.fold_rollups(metrics_store)
    for query in queries:
        await check_matrix(metrics_store, "acme", query)


# -- gauges ---------------------------------------------------------------------------

# Follower readings, commit by commit: (event id, influencer, platform, reading, ts).
READINGS = (
    (
        ("g1", "ana", "instagram", 1000, at(0, 9)),
        ("g2", "ana", "instagram", 1100, at(0, 15)),
        ("g3", "ana", "tiktok", 500, at(0, 12)),
        ("g4", "ben", "instagram", 300, at(1, 6)),
    ),
    (
        ("g5", "ana", "instagram", 1050, at(1, 9)),
        ("g6", "ana", "tiktok", 700, at(1, 12)),
        ("g7", "ben", "instagram", 250, at(1, 6, 30)),
    ),
    (
        ("g8", "ana", "instagram", 1200, at(1, 20)),
        ("g9", "ana", "instagram", 1180, at(2, 8)),
        ("g10", "ben", "instagram", 400, at(2, 1)),
    ),
    # Older than ana's last tiktok reading: a reading at its time, though it changes
    # nothing of the series' deltas.
    (("g11", "ana", "tiktok", 900, at(1, 2)),),
)


def reading(row: tuple[Any, ...]) -> EventIn:
    event_id, influencer, platform, value, ts = row
    return event(event_id, influencer, platform, "followers", value, ts, kind="snapshot")


async def load_readings(store: EventStore, tenant: str) -> None:
    for rows in READINGS:
        await append(store, tenant, [reading(row) for row in rows])
    # Counted, not read: no gauge reading of likes comes of it.
    await append(store, tenant, [event("l1", "ana", "instagram", "likes", 7, at(1, 9))])


Accounts = dict[tuple[str, str, str], AccountReadings]


def gauges(
    span: tuple[int, int],
    grain: Grain | None,
    *,
    influencer_ids: tuple[str, ...] | None = None,
    platform: str | None = None,
    metrics: tuple[str, ...] = ("followers",),
) -> GaugeQuery:
    return GaugeQuery(span[0], span[1], metrics, influencer_ids, platform, grain)


async def accounts(reader: MetricsReader, tenant: str, query: GaugeQuery) -> Accounts:
    answer = await reader.gauges(tenant, query)
    found: Accounts = {}
    for row in answer.rows:
        key = (row.influencer_id, row.platform, row.metric)
        assert key not in found, f"{key} is not one account"
        found[key] = row.readings
    return found


ANA_IG = ("ana", "instagram", "followers")
ANA_TT = ("ana", "tiktok", "followers")
BEN_IG = ("ben", "instagram", "followers")

GAUGE_CASES: list[tuple[str, GaugeQuery, Accounts]] = [
    (
        "one day by hour; no reading of likes",
        gauges((at(1), at(2)), HOUR, metrics=("followers", "likes")),
        {
            ANA_IG: AccountReadings(
                (at(0, 15), 1100),
                (at(1, 9), 1050),
                {at(1, 9): (at(1, 9), 1050), at(1, 20): (at(1, 20), 1200)},
            ),
            ANA_TT: AccountReadings(
                (at(0, 12), 500),
                (at(1, 2), 900),
                {at(1, 2): (at(1, 2), 900), at(1, 12): (at(1, 12), 700)},
            ),
            # Two readings in one bucket, going down: the last one.
            BEN_IG: AccountReadings(None, (at(1, 6), 300), {at(1, 6): (at(1, 6, 30), 250)}),
        },
    ),
    (
        # A reading at the start is both at the start and the first inside; one at
        # the end is outside. Without a grain the one bucket is the range's start.
        "readings on both ends, no grain",
        gauges((at(0, 9), at(1, 9)), None),
        {
            ANA_IG: AccountReadings(
                (at(0, 9), 1000), (at(0, 9), 1000), {at(0, 9): (at(0, 15), 1100)}
            ),
            ANA_TT: AccountReadings(None, (at(0, 12), 500), {at(0, 9): (at(1, 2), 900)}),
            BEN_IG: AccountReadings(None, (at(1, 6), 300), {at(0, 9): (at(1, 6, 30), 250)}),
        },
    ),
    (
        "one account by day",
        gauges(WHOLE_DAYS, DAY, influencer_ids=("ana",), platform="instagram"),
        {
            ANA_IG: AccountReadings(
                None,
                (at(0, 9), 1000),
                {
                    at(0): (at(0, 15), 1100),
                    at(1): (at(1, 20), 1200),
                    at(2): (at(2, 8), 1180),
                },
            ),
        },
    ),
    (
        # Accounts with readings before the range only are there, with at_start alone.
        "half a minute by minute",
        gauges((at(1, 6, 15), at(1, 6, 45)), MINUTE),
        {
            ANA_IG: AccountReadings((at(0, 15), 1100), None, {}),
            ANA_TT: AccountReadings((at(1, 2), 900), None, {}),
            BEN_IG: AccountReadings(
                (at(1, 6), 300), (at(1, 6, 30), 250), {at(1, 6, 30): (at(1, 6, 30), 250)}
            ),
        },
    ),
    (
        "one influencer, going up again",
        gauges((at(2), at(3)), HOUR, influencer_ids=("ben", "carl")),
        {
            BEN_IG: AccountReadings(
                (at(1, 6, 30), 250), (at(2, 1), 400), {at(2, 1): (at(2, 1), 400)}
            )
        },
    ),
    (
        "one platform",
        gauges(WHOLE_DAYS, None, platform="tiktok"),
        {ANA_TT: AccountReadings(None, (at(0, 12), 500), {at(0): (at(1, 12), 700)})},
    ),
    (
        "no account of that platform",
        gauges(WHOLE_DAYS, DAY, influencer_ids=("ben",), platform="tiktok"),
        {},
    ),
    ("no influencer at all", gauges(WHOLE_DAYS, DAY, influencer_ids=()), {}),
]


async def check_gauges(reader: MetricsReader, tenant: str) -> list[Accounts]:
    found = []
    for name, query, expected in GAUGE_CASES:
        answer = await accounts(reader, tenant, query)
        assert answer == expected, name
        found.append(answer)
    # Counters of a snapshot metric sum its deltas: the last reading, as the late
    # reading added nothing.
    deltas = await summed(
        reader,
        tenant,
        counters(WHOLE_DAYS, by=("influencer_id", "platform"), metrics=("followers",)),
    )
    assert deltas == sums(
        (("ana", "instagram"), None, "followers", 1180, 5),
        (("ana", "tiktok"), None, "followers", 700, 3),
        (("ben", "instagram"), None, "followers", 400, 3),
    )
    return [*found, deltas]


async def test_gauges_read_the_readings_of_each_account(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await load_readings(event_store, "acme")
    await append(event_store, "other", [reading(("o1", "ana", "instagram", 5, at(1)))])

    async def check() -> list[Any]:
        found = await check_gauges(metrics_store, "acme")
        other = await accounts(metrics_store, "other", gauges((at(1), at(2)), HOUR))
        # A reading exactly at the start is at_start, first, and in the first bucket.
        assert other == {ANA_IG: AccountReadings((at(1), 5), (at(1), 5), {at(1): (at(1), 5)})}
        return [*found, other]

    await both_ways(store_backend, metrics_store, check)


async def test_readings_at_one_moment_are_ordered_by_value(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    """As ``metrics.model.Point`` orders readings: by time, then by value, whatever
    order they came in."""
    moment = at(1, 5)
    for commit, values in enumerate(((10, 7), (12, 3))):
        rows = [(f"r{commit}{v}", "ben", "tiktok", v, moment) for v in values]
        await append(event_store, "acme", [reading(row) for row in rows])
    ben = ("ben", "tiktok", "followers")

    async def check() -> list[Accounts]:
        found = [
            await accounts(metrics_store, "acme", gauges((at(1), at(2)), HOUR)),
            await accounts(metrics_store, "acme", gauges((moment, moment + 1), MINUTE)),
        ]
        assert found == [
            {ben: AccountReadings(None, (moment, 3), {moment: (moment, 12)})},
            {ben: AccountReadings((moment, 12), (moment, 3), {moment: (moment, 12)})},
        ]
        return found

    await both_ways(store_backend, metrics_store, check)


# -- users ------------------------------------------------------------------------------

# (event id, influencer, platform, metric, value, ts, user, content)
USERS = (
    ("a1", "ana", "instagram", "likes", 2, at(0, 10, 1), "u1", "p1"),
    ("a2", "ana", "instagram", "likes", 1, at(0, 10, 2), "u2", "p1"),
    ("a3", "ana", "instagram", "views", 50, at(0, 10, 3), "u4", "p1"),  # not engagement
    ("a4", "ana", "instagram", "likes", 1, at(0, 10, 4), None, "p1"),  # nobody's
    ("a5", "ana", "instagram", "comments", 1, at(0, 11), "u1", "p1"),
    ("a6", "ben", "youtube", "likes", 4, at(0, 8), "u5", None),
    ("a7", "ben", "tiktok", "shares", 6, at(1, 5), "u3", "p2"),
    ("a8", "ben", "tiktok", "saves", 3, at(1, 5, 30), "u1", "p2"),
)


def user_event(row: tuple[Any, ...], value: float | None = None) -> EventIn:
    event_id, influencer, platform, metric, worth, ts, user, content = row
    value = worth if value is None else value
    return event(
        event_id, influencer, platform, metric, value, ts, user_id=user, content_id=content
    )


async def load_users(store: EventStore, tenant: str) -> None:
    await append(store, tenant, [user_event(row) for row in USERS[:5]])
    await append(store, tenant, [user_event(row) for row in USERS[5:]])
    await append(store, tenant, [user_event(USERS[6], 99)])  # a duplicate of a7


UniqueRows = list[tuple[str | None, int | None, int]]
UNIQUE_CASES: list[tuple[str, tuple[int, int], Filters, Grain | None, str | None, UniqueRows]] = [
    ("everyone", WHOLE_DAYS, Filters(), None, None, [(None, None, 4)]),
    (
        "by platform, by day",
        WHOLE_DAYS,
        Filters(),
        DAY,
        "platform",
        [("instagram", at(0), 2), ("tiktok", at(1), 2), ("youtube", at(0), 1)],
    ),
    (
        "by influencer, by hour",
        WHOLE_DAYS,
        Filters(),
        HOUR,
        "influencer_id",
        [("ana", at(0, 10), 2), ("ana", at(0, 11), 1), ("ben", at(0, 8), 1), ("ben", at(1, 5), 2)],
    ),
    # u5 liked no content: left out.
    ("by content", WHOLE_DAYS, Filters(), None, "content_id", [("p1", None, 2), ("p2", None, 2)]),
    ("by campaign: none has one", WHOLE_DAYS, Filters(), None, "campaign_id", []),
    ("one platform", WHOLE_DAYS, Filters(platform="tiktok"), None, None, [(None, None, 2)]),
    (
        "one influencer, by day",
        WHOLE_DAYS,
        Filters(influencer_id="ben"),
        DAY,
        None,
        [(None, at(0), 1), (None, at(1), 2)],
    ),
    (
        "one content, by minute",
        WHOLE_DAYS,
        Filters(content_id="p1"),
        MINUTE,
        None,
        [(None, at(0, 10, 1), 1), (None, at(0, 10, 2), 1), (None, at(0, 11), 1)],
    ),
    # From u2's like (inside a minute) to between a7 and a8 (inside an hour): u2, u1, u3.
    ("ragged", (at(0, 10, 1, 30), at(1, 5, 15)), Filters(), None, None, [(None, None, 3)]),
]


async def check_unique_users(reader: MetricsReader, tenant: str) -> list[UniqueRows]:
    found = []
    for name, span, filters, grain, by, expected in UNIQUE_CASES:
        answer = await reader.unique_users(
            tenant, *span, filters, grain=grain, by=by, engagement_metrics=ENGAGEMENT
        )
        rows = users_counted(answer.rows)
        assert rows == sorted(expected, key=repr), name
        found.append(rows)
    # Engagement is what the caller names.
    for metrics, expected in ((("likes",), 3), (("views",), 1), (("votes",), 0)):
        answer = await reader.unique_users(
            tenant, *WHOLE_DAYS, Filters(), grain=None, by=None, engagement_metrics=metrics
        )
        assert users_counted(answer.rows) == ([(None, None, expected)] if expected else [])
    return found


def users_counted(rows: UniqueRows) -> UniqueRows:
    """The rows in a fixed order, without rows of no user: the port leaves open whether
    an ungrouped, unbucketed count of nobody is a row of 0 (the embedded store) or none."""
    return sorted((row for row in rows if row[2]), key=repr)


async def test_unique_users_count_distinct_engaged_users(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await load_users(event_store, "acme")
    await append(event_store, "other", [user_event(USERS[0]), user_event(USERS[1])])

    async def check() -> list[Any]:
        found = await check_unique_users(metrics_store, "acme")
        other = await metrics_store.unique_users(
            "other", *WHOLE_DAYS, Filters(), grain=None, by=None, engagement_metrics=ENGAGEMENT
        )
        assert other.rows == [(None, None, 2)]
        nobody = await metrics_store.unique_users(
            "nobody", *WHOLE_DAYS, Filters(), grain=None, by=None, engagement_metrics=ENGAGEMENT
        )
        assert users_counted(nobody.rows) == []
        return [*found, other.rows]

    await both_ways(store_backend, metrics_store, check)


U1 = UserRow("u1", 3, 6, ("instagram", "tiktok"), at(1, 5, 30))
U2 = UserRow("u2", 1, 1, ("instagram",), at(0, 10, 2))
U3 = UserRow("u3", 1, 6, ("tiktok",), at(1, 5))
U5 = UserRow("u5", 1, 4, ("youtube",), at(0, 8))


async def user_page(
    metrics: MetricsStore,
    tenant: str,
    since_us: int,
    *,
    min_engagement: float = 0,
    after: tuple[float, str] | None = None,
    limit: int = 10,
    engagement_metrics: tuple[str, ...] = ENGAGEMENT,
) -> list[UserRow]:
    answer = await metrics.user_activity(
        tenant,
        since_us,
        min_engagement=min_engagement,
        engagement_metrics=engagement_metrics,
        after=after,
        limit=limit,
    )
    return answer.rows


async def check_user_activity(metrics: MetricsStore, tenant: str) -> list[list[UserRow]]:
    # By engagement, then user id: u1 and u3 tie at 6.
    pages = [
        (await user_page(metrics, tenant, at(0)), [U1, U3, U5, U2]),
        (await user_page(metrics, tenant, at(0), min_engagement=4), [U1, U3, U5]),
        (await user_page(metrics, tenant, at(0), limit=2), [U1, U3]),
        (await user_page(metrics, tenant, at(0), after=(6.0, "u3"), limit=2), [U5, U2]),
        (await user_page(metrics, tenant, at(0), after=(6.0, "u1")), [U3, U5, U2]),
        (await user_page(metrics, tenant, at(0), after=(1.0, "u2")), []),
        # Since inside a minute: a1 and a6 are before it; u1 keeps a5 and a8.
        (
            await user_page(metrics, tenant, at(0, 10, 1, 30)),
            [U3, UserRow("u1", 2, 4, ("instagram", "tiktok"), at(1, 5, 30)), U2],
        ),
        (
            await user_page(metrics, tenant, at(0), engagement_metrics=("views",)),
            [UserRow("u4", 1, 50, ("instagram",), at(0, 10, 3))],
        ),
        (await user_page(metrics, tenant, at(1, 6)), []),
    ]
    for n, (found, expected) in enumerate(pages):
        assert found == expected, f"page {n}"
    return [found for found, _ in pages]


async def test_user_activity_ranks_users_by_engagement(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await load_users(event_store, "acme")
    await append(event_store, "other", [user_event(USERS[0], 7)])

    async def check() -> list[Any]:
        found = await check_user_activity(metrics_store, "acme")
        other = await user_page(metrics_store, "other", at(0))
        assert other == [UserRow("u1", 1, 7, ("instagram",), at(0, 10, 1))]
        return [*found, other]

    await both_ways(store_backend, metrics_store, check)


# -- trending ----------------------------------------------------------------------------

# (event id, platform, metric, value, ts, content, text, tags), all of influencer ana.
TRENDING = (
    ("t1", "instagram", "likes", 5, at(1, 10), "p1", "nice", ["a", "b"]),
    ("t2", "instagram", "comments", 1, at(1, 10, 30), "p1", "wow", ["b", "c"]),
    ("t3", "instagram", "shares", 2, at(1, 11), "p1", None, ["b"]),
    ("t4", "instagram", "views", 100, at(1, 11, 30), "p1", "not engagement", ["z"]),
    ("t5", "tiktok", "saves", 4, at(1, 12), "p2", "beta", ["x"]),
    ("t6", "tiktok", "comments", 3, at(1, 8), "p2", "early", ["x"]),
    ("t7", "instagram", "likes", 1, at(1, 9, 59), "p3", None, None),
    ("t8", "instagram", "likes", 10, at(1, 13), "p4", None, ["g", "f", "e", "d"]),
    ("t9", "instagram", "likes", 50, at(1, 12), None, "no content", ["z"]),
)
# At the same moment as t5, with a text that sorts before it, in a later commit.
TIE = ("t10", "tiktok", "likes", 4, at(1, 12), "p2", "alpha", ["y"])


def trending_event(row: tuple[Any, ...], value: float | None = None) -> EventIn:
    event_id, platform, metric, worth, ts, content, text, tags = row
    value = worth if value is None else value
    return event(
        event_id, "ana", platform, metric, value, ts, content_id=content, text=text, tags=tags
    )


async def load_trending(store: EventStore, tenant: str) -> None:
    await append(store, tenant, [trending_event(row) for row in TRENDING[:5]])
    await append(store, tenant, [trending_event(row) for row in TRENDING[5:]])
    await append(store, tenant, [trending_event(TIE), trending_event(TRENDING[0], 500)])


def trending(
    span: tuple[int, int],
    *,
    platform: str | None = None,
    min_interactions: int = 1,
    after: tuple[float, str] | None = None,
    limit: int = 10,
) -> TrendingQuery:
    return TrendingQuery(span[0], span[1], platform, min_interactions, after, limit)


# Hours 9 to 14 of day 1: t6 is before them. The latest text is the sample; at the
# same moment (t5 and t10), the greatest text. Tags by count, then name; three at most.
P1 = TrendingRow("p1", 3, 8, at(1, 11), "wow", ("b", "a", "c"))
P2 = TrendingRow("p2", 2, 8, at(1, 12), "beta", ("x", "y"))
P3 = TrendingRow("p3", 1, 1, at(1, 9, 59), None, ())
P4 = TrendingRow("p4", 1, 10, at(1, 13), None, ("d", "e", "f"))
HOURS_9_TO_14 = (at(1, 9), at(1, 14))

TRENDING_CASES: list[tuple[str, TrendingQuery, list[TrendingRow]]] = [
    ("by engagement, then content", trending(HOURS_9_TO_14), [P4, P1, P2, P3]),
    ("two interactions at least", trending(HOURS_9_TO_14, min_interactions=2), [P1, P2]),
    ("first page", trending(HOURS_9_TO_14, limit=2), [P4, P1]),
    ("second page", trending(HOURS_9_TO_14, after=(8.0, "p1"), limit=2), [P2, P3]),
    ("past the last", trending(HOURS_9_TO_14, after=(1.0, "p3")), []),
    ("one platform", trending(HOURS_9_TO_14, platform="tiktok"), [P2]),
    (
        # Inside an hour to the instant t5 and t10 happen: t2 and t3 only.
        "ragged",
        trending((at(1, 10, 15), at(1, 12))),
        [TrendingRow("p1", 2, 3, at(1, 11), "wow", ("b", "c"))],
    ),
    (
        # A second past both ends: t2, t3, t5 and t10, read from the raw events.
        "ragged by a second",
        trending((at(1, 10, 0, 1), at(1, 12, 0, 1))),
        [P2, TrendingRow("p1", 2, 3, at(1, 11), "wow", ("b", "c"))],
    ),
    (
        "the whole day",
        trending((at(1), at(2))),
        [TrendingRow("p2", 3, 11, at(1, 12), "beta", ("x", "y")), P4, P1, P3],
    ),
    ("another day", trending((at(2), at(3))), []),
]


async def check_trending(metrics: MetricsStore, tenant: str) -> list[list[TrendingRow]]:
    found = []
    for name, query, expected in TRENDING_CASES:
        answer = await metrics.trending(tenant, query)
        assert answer.rows == expected, name
        found.append(answer.rows)
    return found


async def test_trending_ranks_content_by_engagement(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    await load_trending(event_store, "acme")
    await append(event_store, "other", [trending_event(TRENDING[0], 99)])

    async def check() -> list[Any]:
        found = await check_trending(metrics_store, "acme")
        other = await metrics_store.trending("other", trending(HOURS_9_TO_14))
        assert other.rows == [TrendingRow("p1", 1, 99, at(1, 10), "nice", ("a", "b"))]
        return [*found, other.rows]

    await both_ways(store_backend, metrics_store, check)


# -- emv rates, pinned views, rebuilds -------------------------------------------------


async def test_emv_rates_are_set_overridden_and_removed_per_tenant(
    metrics_store: MetricsStore,
) -> None:
    assert await metrics_store.emv_rates("acme") == {}
    await metrics_store.set_emv_rates(
        "acme", {("instagram", "likes"): 0.2, ("tiktok", "views"): 0.01}
    )
    await metrics_store.set_emv_rates("other", {("instagram", "likes"): 9.0})
    assert await metrics_store.emv_rates("acme") == {
        ("instagram", "likes"): 0.2,
        ("tiktok", "views"): 0.01,
    }
    await metrics_store.set_emv_rates("acme", {("instagram", "likes"): 0.3, ("x", "shares"): 1.5})
    assert await metrics_store.emv_rates("acme") == {
        ("instagram", "likes"): 0.3,
        ("tiktok", "views"): 0.01,
        ("x", "shares"): 1.5,
    }
    # None removes a rate; removing one never set is no error.
    await metrics_store.set_emv_rates(
        "acme", {("tiktok", "views"): None, ("youtube", "saves"): None, ("x", "shares"): 2.5}
    )
    assert await metrics_store.emv_rates("acme") == {
        ("instagram", "likes"): 0.3,
        ("x", "shares"): 2.5,
    }
    assert await metrics_store.emv_rates("other") == {("instagram", "likes"): 9.0}
    assert await metrics_store.emv_rates("nobody") == {}
    async with metrics_store.pinned() as view:
        assert await view.emv_rates("acme") == {("instagram", "likes"): 0.3, ("x", "shares"): 2.5}


async def pinned_answers(reader: MetricsReader) -> tuple[Any, ...]:
    """Today's likes by hour, ana's follower readings and today's engaged users."""
    today = (at(2), at(3))
    likes = await summed(reader, "acme", counters(today, grain=HOUR, metrics=("likes",)))
    readings = await accounts(reader, "acme", gauges(today, HOUR))
    users = await reader.unique_users(
        "acme", *today, Filters(), grain=None, by=None, engagement_metrics=ENGAGEMENT
    )
    return likes, readings, users_counted(users.rows)


async def test_a_pinned_view_sees_exactly_the_commits_before_it(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    before = [
        event("b1", "ana", "instagram", "likes", 3, at(2, 12, 10), user_id="u1"),
        event("b2", "ana", "instagram", "followers", 100, at(2, 12), kind="snapshot"),
    ]
    after = [
        event("a1", "ana", "instagram", "likes", 5, at(2, 13, 20), user_id="u2"),
        event("a2", "ana", "instagram", "followers", 120, at(2, 13), kind="snapshot"),
    ]
    await append(event_store, "acme", before)
    last = await append(event_store, "other", [event("o1", "ana", "instagram", "likes", 1, at(2))])
    seen_then = (
        sums(((), at(2, 12), "likes", 3, 1)),
        {ANA_IG: AccountReadings(None, (at(2, 12), 100), {at(2, 12): (at(2, 12), 100)})},
        [(None, None, 1)],
    )
    seen_now = (
        sums(((), at(2, 12), "likes", 3, 1), ((), at(2, 13), "likes", 5, 1)),
        {
            ANA_IG: AccountReadings(
                None,
                (at(2, 12), 100),
                {at(2, 12): (at(2, 12), 100), at(2, 13): (at(2, 13), 120)},
            )
        },
        [(None, None, 2)],
    )
    async with metrics_store.pinned() as view:
        # The seq of the last commit, whichever tenant's it was.
        assert view.seq == last
        later = await append(event_store, "acme", after)
        assert later > view.seq
        assert await pinned_answers(view) == seen_then
        assert await pinned_answers(metrics_store) == seen_now
        # Folding the later commit into the rollups changes nothing the view sees.
        await store_backend.fold_rollups(metrics_store)
        assert await pinned_answers(view) == seen_then
    assert await pinned_answers(metrics_store) == seen_now
    async with metrics_store.pinned() as view:
        assert view.seq == later
        assert await pinned_answers(view) == seen_now


async def everything(metrics: MetricsStore) -> list[Any]:
    """Every check of this suite, on the datasets ``load_everything`` appends."""
    return [
        await check_counters(metrics, "counted", RANGE_CASES + GROUP_CASES + FILTER_CASES),
        await check_counters(metrics, "counted", LATE_CASES),
        await check_gauges(metrics, "gauged"),
        await check_unique_users(metrics, "users"),
        await check_user_activity(metrics, "users"),
        await check_trending(metrics, "trending"),
    ]


async def load_everything(store: EventStore) -> int:
    """Each dataset as a tenant of its own, and one event a month older; events stored."""
    await load_counted(store, "counted")
    await load_readings(store, "gauged")
    await load_users(store, "users")
    await load_trending(store, "trending")
    await append(store, "archive", [event("old", "ana", "x", "likes", 1, at(-40))])
    tenants = ("counted", "gauged", "users", "trending", "archive")
    return sum([await store.count_events(tenant) for tenant in tenants])


async def test_rebuild_recomputes_the_rollups_and_changes_no_answer(
    store_backend: Any, event_store: EventStore, metrics_store: MetricsStore
) -> None:
    stored = await load_everything(event_store)
    assert stored == len(COUNTED) + 1 + 11 + 1 + len(USERS) + len(TRENDING) + 1 + 1
    before = await everything(metrics_store)
    calls: list[tuple[int, int]] = []
    assert await metrics_store.rebuild(lambda done, total: calls.append((done, total))) == stored
    assert calls[-1] == (stored, stored)
    assert [total for _, total in calls] == [stored] * len(calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert await everything(metrics_store) == before
    # Rollups go on following new commits after a rebuild.
    await append(event_store, "counted", [event("n1", "ana", "x", "likes", 1024, at(2, 10))])
    query = counters(WHOLE_DAYS, by=("platform",), grain=DAY, metrics=("likes",))

    async def check() -> CounterSums:
        found = await summed(metrics_store, "counted", query)
        assert found[(("x",), at(2), "likes")] == (1024, 1)
        assert found[(("tiktok",), at(2), "likes")] == (256, 1)
        return found

    await both_ways(store_backend, metrics_store, check)


async def test_answers_during_a_rebuild_still_see_every_event(
    store_backend: Any,
    event_store: EventStore,
    metrics_store: MetricsStore,
) -> None:
    await load_everything(event_store)
    await store_backend.fold_rollups(metrics_store)
    expected = await everything(metrics_store)
    loop_thread = threading.get_ident()
    midway, resume = threading.Event(), threading.Event()

    def progress(done: int, total: int) -> None:
        del total
        if done == 0:
            midway.set()
            # A rebuild running on a thread of its own (the embedded writer) waits here
            # while the test queries; one running on the event loop must not block it.
            if threading.get_ident() != loop_thread:
                resume.wait(30)

    rebuild = asyncio.ensure_future(metrics_store.rebuild(progress))
    try:
        assert await asyncio.to_thread(midway.wait, 30)
        during = await everything(metrics_store)
    finally:
        resume.set()
        await rebuild
    assert during == expected
