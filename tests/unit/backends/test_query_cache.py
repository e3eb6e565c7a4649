"""The query cache over the embedded store answers exactly as the store does: loaded
from the rollups, fed by the change feed (late events included), right after an
acknowledgement, after a gap in the feed, and after an erasure."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypemeter.backends.embedded.duckdb_store import DuckDBDatabase, StoreConfig
from hypemeter.backends.embedded.duckdb_store.adapters import (
    DuckDBEventStore,
    DuckDBMetricsStore,
)
from hypemeter.changes.feed import ChangeFeed
from hypemeter.clock import FixedClock
from hypemeter.events.batch import EventBatch
from hypemeter.events.commit import CommitStep
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.metrics.cache import CachedMetricsStore
from hypemeter.metrics.model import Grain
from hypemeter.metrics.queries import CounterQuery, Filters, TrendingQuery, TrendingRow

HOUR_US = 3_600_000_000
NOW_US = 1_795_183_200_000_000 + 25 * 60_000_000  # 2026-11-20T14:25:00Z
END_US = NOW_US - NOW_US % HOUR_US + HOUR_US
PLATFORMS = ("instagram", "tiktok", "x")
METRICS = ("likes", "comments", "shares", "saves", "views")
CONFIG = StoreConfig(
    dedup_window_us=HOUR_US,
    dedup_memory_entries=10_000,
    queue_limit=100_000,
    commit_max_events=100_000,
    query_threads=2,
)


@dataclass
class World:
    db: DuckDBDatabase
    events: DuckDBEventStore
    store: DuckDBMetricsStore
    feed: ChangeFeed
    commit: CommitStep
    cache: CachedMetricsStore

    async def ingest(self, tenant: str, sample: list[EventIn]) -> None:
        await self.commit.append(
            tenant, EventBatch.from_events(sample, [to_epoch_us(e.ts) for e in sample])
        )

    async def loaded(self, loads: int = 1) -> None:
        """Until the cache has loaded ``loads`` times and holds its windows."""
        while not self.cache.loaded or self.cache.loads < loads:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = DuckDBDatabase(tmp_path / "hypemeter.duckdb", clock=FixedClock(NOW_US), config=CONFIG)
    events, store, feed = DuckDBEventStore(db), DuckDBMetricsStore(db), ChangeFeed()
    cache = CachedMetricsStore(store, feed, FixedClock(NOW_US))
    await events.start()
    await cache.start()
    try:
        yield World(db, events, store, feed, CommitStep(events, feed), cache)
    finally:
        await cache.aclose()
        await feed.aclose()
        await events.aclose()


def workload(seed: int, n: int = 300) -> list[EventIn]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append(
            EventIn(
                influencer_id=rng.choice(["inf-1", "inf-2", "inf-3"]),
                platform=rng.choice(PLATFORMS),
                metric=rng.choice(METRICS),
                value=rng.choice([1.0, 2.0, 5.0, 0.5]),
                content_id=rng.choice([None, *(f"post-{i}" for i in range(12))]),
                campaign_id=rng.choice([None, "c-1", "c-2"]),
                # Hours back over ten days: some before the window, many late.
                ts=from_epoch_us(NOW_US - rng.randint(0, 240) * HOUR_US - rng.randint(0, HOUR_US)),
                text=rng.choice([None, None, "wow", "nice, really", "zz"]),
                tags=rng.sample(["sale", "fall", "ad", "diy"], rng.randint(0, 3)) or None,
            )
        )
    return out


def queries(rng: random.Random) -> list[CounterQuery]:
    out = []
    for _ in range(12):
        hours = rng.choice([1, 5, 24, 7 * 24])
        out.append(
            CounterQuery(
                END_US - hours * HOUR_US,
                END_US,
                tuple(rng.sample(METRICS, 3)),
                Filters(
                    influencer_id=rng.choice([None, "inf-1", "inf-2", "nobody"]),
                    platform=rng.choice([None, None, *PLATFORMS]),
                    campaign_id=rng.choice([None, None, "c-1"]),
                ),
                rng.choice([(), ("platform",), ("campaign_id",), ("influencer_id", "platform")]),
                rng.choice([None, Grain.HOUR, Grain.DAY]),
            )
        )
    return out


def trending_row(r: TrendingRow) -> tuple[object, ...]:
    return (
        r.content_id,
        r.interactions,
        round(r.engagement, 6),
        r.latest_us,
        r.sample_text,
        r.tags,
    )


async def compare(world: World, seed: int) -> int:
    """Cache and store agree on counters, matrices and trending; answers from memory."""
    rng = random.Random(seed)
    answered = 0
    for tenant in ("acme", "globex", "nobody"):
        for q in queries(rng):
            assert world.cache.loaded
            mine = world.cache._windows.counters.counters(tenant, q)  # type: ignore[union-attr]
            assert mine is not None  # whole hours of the window: answered from memory
            cached = await world.cache.counters(tenant, q)
            stored = await world.store.counters(tenant, q)
            key = lambda r: (r.key, r.bucket, r.metric)  # noqa: E731
            assert {key(r): (round(r.total, 6), r.events) for r in cached.rows} == {
                key(r): (round(r.total, 6), r.events) for r in stored.rows
            }, q
            answered += len(cached.rows)
            if not q.by and q.grain is not None:
                matrix = await world.cache.counter_matrix(tenant, q)
                assert matrix is not None
                sums = {(r.bucket, r.metric): r.total for r in stored.rows}
                for metric, values in matrix.values.items():
                    for i, value in enumerate(values.tolist()):
                        bucket = matrix.origin_us + i * matrix.grain_us
                        assert value == pytest.approx(sums.get((bucket, metric), 0.0))
        for hours in (1, 24, 72):
            q = TrendingQuery(
                END_US - hours * HOUR_US,
                END_US,
                rng.choice([None, *PLATFORMS]),
                rng.choice([0, 1, 3]),
                None,
                rng.randint(2, 8),
            )
            cached_t = await world.cache.trending(tenant, q)
            stored_t = await world.store.trending(tenant, q)
            assert [trending_row(r) for r in cached_t.rows] == [
                trending_row(r) for r in stored_t.rows
            ]
    return answered


@pytest.mark.parametrize("seed", range(3))
async def test_loaded_then_fed_the_cache_answers_as_the_store(world: World, seed: int) -> None:
    sample = workload(seed)
    await world.ingest("acme", sample[:150])
    assert world.store.wait_folded()
    await world.loaded()
    assert await compare(world, seed) > 0
    # Later commits reach the cache through the feed; no wait before the queries.
    await world.ingest("acme", sample[150:])
    await world.ingest("globex", sample[::3])
    assert await compare(world, seed + 100) > 0
    assert world.cache.loads == 1


async def test_a_gap_in_the_feed_reloads_the_cache(world: World) -> None:
    await world.ingest("acme", workload(7, 50))
    await world.loaded()
    assert world.cache._sub is not None
    world.cache._sub.lost()  # change sets lost: the cache cannot know what they held
    await world.ingest("acme", workload(8, 50))
    assert not world.cache.loaded or world.cache.loads == 2
    answer = await world.cache.counters(
        "acme", CounterQuery(END_US - 24 * HOUR_US, END_US, METRICS)
    )
    stored = await world.store.counters(
        "acme", CounterQuery(END_US - 24 * HOUR_US, END_US, METRICS)
    )
    assert sorted((r.metric, r.total) for r in answer.rows) == sorted(
        (r.metric, r.total) for r in stored.rows
    )
    await world.loaded(2)
    assert await compare(world, 9) > 0


async def test_an_erasure_drops_what_the_cache_held(world: World) -> None:
    await world.ingest("acme", workload(3))
    await world.loaded()
    q = CounterQuery(END_US - 7 * 24 * HOUR_US, END_US, METRICS, Filters("inf-1"))
    assert (await world.cache.counters("acme", q)).rows
    assert await world.events.erase_influencer("acme", "inf-1") > 0
    assert (await world.cache.counters("acme", q)).rows == []
    await world.loaded(2)
    assert (await world.cache.counters("acme", q)).rows == []
    assert await compare(world, 4) > 0
