"""A pinned view of the embedded store sees exactly the commits up to its seq."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypemeter.backends.embedded.duckdb_store import DuckDBDatabase, StoreConfig
from hypemeter.backends.embedded.duckdb_store.adapters import (
    DuckDBEventStore,
    DuckDBMetricsStore,
)
from hypemeter.backends.ports import CounterQuery, Filters
from hypemeter.clock import FixedClock
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
HOUR_US = 3_600_000_000


def likes(event_id: str, value: float) -> EventIn:
    return EventIn(
        influencer_id="inf-1",
        platform="instagram",
        metric="likes",
        value=value,
        event_id=event_id,
        ts=from_epoch_us(NOW_US - 60_000_000),
    )


def batch(*events: EventIn) -> EventBatch:
    return EventBatch.from_events(list(events), [to_epoch_us(e.ts) for e in events])


async def total(reader: object, query: CounterQuery) -> float:
    answer = await reader.counters("acme", query)  # type: ignore[attr-defined]
    return sum(row.total for row in answer.rows)


async def test_a_pinned_view_excludes_later_commits(tmp_path: Path) -> None:
    config = StoreConfig(
        dedup_window_us=HOUR_US,
        dedup_memory_entries=1000,
        queue_limit=10_000,
        commit_max_events=10_000,
        query_threads=4,
    )
    db = DuckDBDatabase(tmp_path / "hypemeter.duckdb", clock=FixedClock(NOW_US), config=config)
    events, metrics = DuckDBEventStore(db), DuckDBMetricsStore(db)
    await events.start()
    await metrics.start()
    try:
        first = await events.append("acme", batch(likes("a", 3)))
        query = CounterQuery(NOW_US - HOUR_US, NOW_US + HOUR_US, ("likes",), Filters("inf-1"))
        async with metrics.pinned() as view:
            assert view.seq == first.seq
            later = await events.append("acme", batch(likes("b", 5)))
            assert later.seq > view.seq
            # Every query of the view, however late it runs, sees the first commit only.
            assert await total(view, query) == 3
            await asyncio.sleep(0.05)
            assert await total(view, query) == 3
        assert await total(metrics, query) == 8

        # More pinned views than half the readers at once: they queue, none deadlocks.
        async def pinned_total() -> tuple[int, float]:
            async with metrics.pinned() as view:
                return view.seq, await total(view, query)

        found = await asyncio.wait_for(asyncio.gather(*(pinned_total() for _ in range(9))), 30)
        assert found == [(later.seq, 8.0)] * 9
    finally:
        await metrics.aclose()
        await events.aclose()
