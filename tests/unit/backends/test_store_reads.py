"""Reads of the embedded store: a pinned view sees exactly the commits up to its seq,
and every read sees every event acknowledged before it. The store acknowledges on its
journal and applies to DuckDB behind it; a store that never got to apply an
acknowledged group gets it from the journal when it is opened again."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest

from hypemeter.backends.embedded.duckdb_store import DuckDBDatabase, StoreConfig
from hypemeter.backends.embedded.duckdb_store.adapters import (
    DuckDBEventStore,
    DuckDBMetricsStore,
)
from hypemeter.clock import FixedClock
from hypemeter.errors import StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.metrics.queries import CounterQuery, Filters

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


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


CONFIG = StoreConfig(
    dedup_window_us=HOUR_US,
    dedup_memory_entries=1000,
    queue_limit=10_000,
    commit_max_events=10_000,
    query_threads=4,
)
QUERY = CounterQuery(NOW_US - HOUR_US, NOW_US + HOUR_US, ("likes",), Filters("inf-1"))


def open_store(path: Path) -> tuple[DuckDBDatabase, DuckDBEventStore, DuckDBMetricsStore]:
    db = DuckDBDatabase(path, clock=FixedClock(NOW_US), config=CONFIG)
    return db, DuckDBEventStore(db), DuckDBMetricsStore(db)


def stored_values(path: Path) -> dict[str, float]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT event_id, delta FROM events").fetchall()
    return {str(event_id): float(delta) for event_id, delta in rows}


async def test_a_pinned_view_excludes_later_commits(tmp_path: Path) -> None:
    _, events, metrics = open_store(tmp_path / "hypemeter.duckdb")
    await events.start()
    await metrics.start()
    try:
        first = await events.append("acme", batch(likes("a", 3)))
        query = QUERY
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


async def test_a_read_waits_for_the_groups_acknowledged_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, events, metrics = open_store(tmp_path / "hypemeter.duckdb")
    await events.start()
    await metrics.start()
    release = threading.Event()
    applying = threading.Event()
    insert = db._insert

    def held_insert(con: duckdb.DuckDBPyConnection, staged: list[Any]) -> int:
        applying.set()
        assert release.wait(30)
        return insert(con, staged)

    try:
        await events.append("acme", batch(likes("a", 3)))
        assert await total(metrics, QUERY) == 3
        monkeypatch.setattr(db, "_insert", held_insert)
        acked = await events.append("acme", batch(likes("b", 5)))
        assert acked.accepted == 1  # acknowledged while DuckDB does not have it yet
        assert await asyncio.to_thread(applying.wait, 30)
        reading = asyncio.ensure_future(total(metrics, QUERY))
        await asyncio.sleep(0.3)
        assert not reading.done()  # it waits for the acknowledged group
        release.set()
        assert await reading == 8
    finally:
        release.set()
        await events.aclose()
        await metrics.aclose()


async def test_groups_duckdb_never_got_are_replayed_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hypemeter.duckdb"
    db, events, metrics = open_store(path)
    await events.start()
    await metrics.start()

    def failing_insert(con: duckdb.DuckDBPyConnection, staged: list[Any]) -> int:
        raise duckdb.IOException("disk gone")

    try:
        await events.append("acme", batch(likes("a", 3)))
        assert await total(metrics, QUERY) == 3
        monkeypatch.setattr(db, "_insert", failing_insert)
        acked = await events.append("acme", batch(likes("b", 5), likes("c", 7)))
        assert acked.accepted == 2
        # DuckDB cannot take it: reads and later appends say so instead of answering short.
        with pytest.raises(StoreUnavailable):
            await total(metrics, QUERY)
        with pytest.raises(StoreUnavailable):
            await events.append("acme", batch(likes("d", 1)))
    finally:
        await events.aclose()
        await metrics.aclose()
    assert stored_values(path) == {"a": 3.0}

    _, events, metrics = open_store(path)
    await events.start()
    await metrics.start()
    try:
        assert await total(metrics, QUERY) == 15
        again = await events.append("acme", batch(likes("b", 5), likes("d", 1)))
        assert (again.accepted, again.duplicates) == (1, 1)  # b was acknowledged before
    finally:
        await events.aclose()
        await metrics.aclose()
    assert stored_values(path) == {"a": 3.0, "b": 5.0, "c": 7.0, "d": 1.0}


async def test_an_erasure_leaves_no_copy_of_the_erased_events_in_the_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hypemeter.duckdb"
    db, events, metrics = open_store(path)
    await events.start()
    await metrics.start()
    try:
        await events.append("acme", batch(likes("erased-event-1", 3), likes("erased-event-2", 4)))
        journal = b"".join(p.read_bytes() for p in (tmp_path / "hypemeter.journal").iterdir())
        assert b"erased-event-1" in journal  # acknowledged through the journal

        assert await db.erase_influencer("acme", "inf-1") == 2
        journal = b"".join(p.read_bytes() for p in (tmp_path / "hypemeter.journal").iterdir())
        assert b"erased-event" not in journal
        assert await total(metrics, QUERY) == 0
        await events.append("acme", batch(likes("later", 5)))
        assert await total(metrics, QUERY) == 5
    finally:
        await events.aclose()
        await metrics.aclose()
    assert stored_values(path) == {"later": 5.0}
