"""The hot indexes answer exactly as the rollup tables do. Engagement: trending's items,
counts, sums, latest times, sample texts and tags, in the same order, page by page,
with or without a platform. Minutes: tenant-wide counters whose ranges start and end
inside an hour. Both step aside once anything newer is committed, or an erasure."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hypemeter.backends.embedded.duckdb_store import DuckDBDatabase, StoreConfig, queries
from hypemeter.backends.embedded.duckdb_store.adapters import (
    DuckDBEventStore,
    DuckDBMetricsStore,
)
from hypemeter.backends.embedded.duckdb_store.hot_tenant import TenantSums
from hypemeter.clock import FixedClock
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.metrics.model import Grain
from hypemeter.metrics.queries import (
    Answer,
    CounterQuery,
    CounterRow,
    Filters,
    TrendingQuery,
    TrendingRow,
)

HOUR_US = 3_600_000_000
NOW_US = 1_795_183_200_000_000 + 25 * 60_000_000  # 2026-11-20T14:25:00Z
END_US = NOW_US - NOW_US % HOUR_US + HOUR_US
PLATFORMS = ("instagram", "tiktok", "x")
CONFIG = StoreConfig(
    dedup_window_us=HOUR_US,
    dedup_memory_entries=10_000,
    queue_limit=100_000,
    commit_max_events=100_000,
    query_threads=2,
)


Store = tuple[DuckDBDatabase, DuckDBEventStore, DuckDBMetricsStore]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    db = DuckDBDatabase(tmp_path / "hypemeter.duckdb", clock=FixedClock(NOW_US), config=CONFIG)
    events, metrics = DuckDBEventStore(db), DuckDBMetricsStore(db)
    await events.start()
    await metrics.start()
    try:
        yield db, events, metrics
    finally:
        await events.aclose()
        await metrics.aclose()


def workload(seed: int) -> list[EventIn]:
    rng = random.Random(seed)
    events = []
    for _ in range(rng.randint(50, 400)):
        text = rng.choice([None, None, "wow", "nice, really", "zz", "a"])
        events.append(
            EventIn(
                influencer_id=rng.choice(["inf-1", "inf-2", "inf-3"]),
                platform=rng.choice(PLATFORMS),
                metric=rng.choice(["likes", "comments", "shares", "saves", "views"]),
                value=rng.choice([1.0, 2.0, 5.0, 0.5]),
                content_id=rng.choice([None, *(f"post-{i}" for i in range(12))]),
                campaign_id=rng.choice([None, "c-1", "c-2"]),
                # Some hours before the index's window; many share an instant, so the
                # greatest sample often has to be chosen by its text.
                ts=from_epoch_us(
                    NOW_US
                    - rng.choice([rng.randint(0, 80), 10 * rng.randint(0, 8)]) * HOUR_US // 2
                    - rng.choice([0, rng.randint(0, HOUR_US)])
                ),
                text=text,
                tags=rng.sample(["sale", "fall", "ad", "diy"], rng.randint(0, 3)) or None,
            )
        )
    return events


def pages(run: object, base: TrendingQuery) -> list[list[TrendingRow]]:
    """Every page of a query, following the (engagement, content id) cursor."""
    out: list[list[TrendingRow]] = []
    after = None
    while True:
        q = TrendingQuery(
            base.start_us, base.end_us, base.platform, base.min_interactions, after, base.limit
        )
        answer: Answer[TrendingRow] = run(q)  # type: ignore[operator]
        out.append(answer.rows)
        if len(answer.rows) < base.limit or len(out) > 40:
            return out
        after = (answer.rows[-1].engagement, answer.rows[-1].content_id)


@pytest.mark.parametrize("seed", range(6))
async def test_trending_from_the_index_equals_trending_from_the_tables(
    store: Store, seed: int
) -> None:
    db, events, metrics = store
    sample = workload(seed)
    rng = random.Random(seed)
    for tenant in ("acme", "globex"):
        chosen = [e for e in sample if rng.random() < 0.7]
        await events.append(
            tenant, EventBatch.from_events(chosen, [to_epoch_us(e.ts) for e in chosen])
        )
    assert metrics.wait_folded()
    engagement = db.engagement
    assert engagement is not None

    def compare() -> int:
        con = db._readers.get()
        try:
            engagement.load_all(con, NOW_US)
            horizon = db.horizon()
            compared = 0
            for _ in range(25):
                tenant = rng.choice(["acme", "globex", "nobody"])
                entry = engagement.get(tenant, horizon.committed)
                assert entry is not None
                base = TrendingQuery(
                    END_US - rng.randint(1, 36) * HOUR_US,
                    END_US,
                    rng.choice([None, *PLATFORMS, "linkedin"]),
                    rng.choice([0, 1, 2, 4]),
                    None,
                    rng.randint(1, 6),
                )
                assert base.start_us >= entry.since_us
                hot = pages(lambda q, e=entry: e.trending(q, queries.TOP_TAGS), base)
                sql = pages(lambda q, t=tenant: queries.trending(con, t, q, horizon), base)
                assert hot == sql, base
                compared += sum(len(p) for p in sql)
            return compared
        finally:
            db._readers.put(con)

    assert await asyncio.to_thread(compare) > 0
    # An erasure rewrites rollups without a commit: the index read before it goes.
    assert await events.erase_influencer("acme", "inf-1") > 0
    assert metrics.wait_folded()
    everything = TrendingQuery(END_US - 36 * HOUR_US, END_US, None, 0, None, 1000)

    def after_erasure() -> list[TrendingRow]:
        con = db._readers.get()
        try:
            horizon = db.horizon()
            entry = engagement.get("acme", horizon.committed)
            if entry is None:  # not read back yet
                engagement.load_all(con, NOW_US)
                entry = engagement.get("acme", horizon.committed)
            assert entry is not None
            hot = entry.trending(everything, queries.TOP_TAGS).rows
            assert hot == queries.trending(con, "acme", everything, horizon).rows
            return hot
        finally:
            db._readers.put(con)

    assert await asyncio.to_thread(after_erasure)
    # Anything committed after the index was read: the tables answer.
    late = EventIn(influencer_id="inf-1", platform="x", metric="likes", content_id="post-1")
    await events.append("acme", EventBatch.from_events([late], [NOW_US]))
    db.wait_applied()
    assert engagement.get("acme", db.horizon().committed) is None


async def test_trending_inside_hours_is_answered_with_the_raw_events_at_its_ends(
    store: Store,
) -> None:
    # The index holds whole hours: a range that starts or ends inside one (as the
    # contract suite's "ragged" case does) must reach the raw events at its ends, even
    # while the index is read back whole and nothing newer is committed.
    db, events, metrics = store
    hour = END_US - 3 * HOUR_US
    minute = 60_000_000
    sample = [
        EventIn(
            influencer_id="inf-1",
            platform="x",
            metric="likes",
            value=value,
            content_id="post-1",
            ts=from_epoch_us(hour + minutes * minute),
        )
        for value, minutes in ((1, 10), (2, 70), (4, 140))
    ]
    await events.append("acme", EventBatch.from_events(sample, [to_epoch_us(e.ts) for e in sample]))
    assert metrics.wait_folded()
    engagement = db.engagement
    assert engagement is not None

    def load() -> None:
        con = db._readers.get()
        try:
            engagement.load_all(con, NOW_US)
        finally:
            db._readers.put(con)

    await asyncio.to_thread(load)
    entry = engagement.get("acme", db.horizon().committed)
    assert entry is not None  # the index may answer: nothing newer is committed
    ragged = TrendingQuery(hour + 5 * minute, hour + 2 * HOUR_US + 15 * minute, None, 1, None, 10)
    whole = TrendingQuery(hour, hour + 3 * HOUR_US, None, 1, None, 10)
    assert not entry.answers(ragged)
    assert entry.answers(whole)
    found = await metrics.trending("acme", ragged)
    assert [(r.content_id, r.interactions, r.engagement) for r in found.rows] == [
        ("post-1", 2, 3.0)
    ]
    found = await metrics.trending("acme", whole)
    assert [(r.content_id, r.interactions, r.engagement) for r in found.rows] == [
        ("post-1", 3, 7.0)
    ]


def counter_rows(answer: Answer[CounterRow]) -> list[tuple[object, ...]]:
    return sorted((r.key, r.bucket, r.metric, r.total, r.events) for r in answer.rows)


@pytest.mark.parametrize("seed", range(4))
async def test_tenant_counters_from_the_minute_index_equal_the_tables(
    store: Store, seed: int
) -> None:
    db, events, metrics = store
    rng = random.Random(seed)
    sample = workload(seed)
    await events.append("acme", EventBatch.from_events(sample, [to_epoch_us(e.ts) for e in sample]))
    assert metrics.wait_folded()
    indexes = (db.minutes, db.tenant_hours)

    def compare() -> int:
        con = db._readers.get()
        try:
            for index in indexes:
                assert index is not None
                index.load_all(con, NOW_US)
            horizon = db.horizon()
            hot_sums = db.tenant_sums("acme", horizon.committed)
            assert hot_sums is not None
            entry = hot_sums.minutes
            assert entry is not None and hot_sums.hours is not None
            compared = 0
            for _ in range(30):
                end = NOW_US - rng.randint(0, 3 * 60) * 60_000_000
                start = end - rng.choice([1, 6, 24]) * HOUR_US - rng.randint(0, 59) * 60_000_000
                by = rng.choice([(), ("platform",), ("campaign_id",), ("platform", "campaign_id")])
                q = CounterQuery(
                    max(start, entry.since_us),
                    end,
                    tuple(rng.sample(["likes", "views", "shares", "comments"], 2)),
                    Filters(
                        None,
                        rng.choice([None, "x", "tiktok", "linkedin"]),
                        rng.choice([None, None, "c-1", "c-9"]),
                    ),
                    by,
                    rng.choice([None, None, Grain.HOUR, Grain.DAY]),
                )
                hot = queries.counters(con, "acme", q, horizon, hot_sums)
                sql = queries.counters(con, "acme", q, horizon)
                assert counter_rows(hot) == counter_rows(sql), q
                compared += len(sql.rows)
                # On the hour at both ends, the hot sums alone answer (no SQL).
                whole = CounterQuery(
                    q.end_us - q.end_us % HOUR_US - 24 * HOUR_US,
                    q.end_us - q.end_us % HOUR_US,
                    q.metrics,
                    q.filters,
                    q.by,
                    q.grain,
                )
                cached = queries.cached_counters(whole, hot_sums)
                assert cached is not None
                sql = queries.counters(con, "acme", whole, horizon)
                assert counter_rows(cached) == counter_rows(sql), whole
                compared += len(sql.rows)
            return compared
        finally:
            db._readers.put(con)

    assert await asyncio.to_thread(compare) > 0
    late = EventIn(influencer_id="inf-1", platform="x", metric="likes")
    await events.append("acme", EventBatch.from_events([late], [NOW_US]))
    db.wait_applied()
    assert db.tenant_sums("acme", db.horizon().committed) == TenantSums(None, None)
