"""Reads of the embedded store: a pinned view sees exactly the commits up to its seq,
and every read sees every event acknowledged before it. The store acknowledges on its
journal and applies to DuckDB behind it; a store that never got to apply an
acknowledged group gets it from the journal when it is opened again."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import numpy as np
import pytest

from hypemeter.backends.embedded.duckdb_store import DuckDBDatabase, StoreConfig, queries
from hypemeter.backends.embedded.duckdb_store import hot as hot_module
from hypemeter.backends.embedded.duckdb_store.adapters import (
    DuckDBEventStore,
    DuckDBMetricsStore,
)
from hypemeter.backends.embedded.duckdb_store.hot import HourSeries
from hypemeter.clock import FixedClock
from hypemeter.errors import StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.metrics.model import Grain
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


def hour_rows(entry: HourSeries) -> set[tuple[str, str | None, str, int, float, int]]:
    """An entry's rows by name, whatever its codes."""

    def name(vocabulary: list[str], code: int) -> str | None:
        return None if code < 0 else vocabulary[code]

    return {
        (
            str(name(entry.platforms, p)),
            name(entry.campaigns, c),
            str(name(entry.metrics, m)),
            int(b),
            float(t),
            int(n),
        )
        for p, c, m, b, t, n in zip(
            entry.platform.tolist(),
            entry.campaign.tolist(),
            entry.metric.tolist(),
            entry.bucket.tolist(),
            entry.total.tolist(),
            entry.events.tolist(),
            strict=True,
        )
    }


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, hot_module.LOAD_CHUNK_ROWS])
async def test_the_hot_index_loaded_whole_equals_entries_read_one_by_one(
    tmp_path: Path, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Loading reads chunks of rows; small ones split influencers and vocabularies.
    monkeypatch.setattr(hot_module, "LOAD_CHUNK_ROWS", chunk_rows)
    db, events, metrics = open_store(tmp_path / "hypemeter.duckdb")
    await events.start()
    await metrics.start()
    at = from_epoch_us(NOW_US - 2 * HOUR_US)
    sample = [
        EventIn(influencer_id="inf-1", platform="x", metric="shares", value=2, ts=at),
        EventIn(influencer_id="inf-2", platform="tiktok", metric="views", value=9, ts=at),
        EventIn(influencer_id="inf-2", platform="youtube", metric="comments", ts=at),
        EventIn(influencer_id="inf-2", platform="tiktok", metric="likes", campaign_id="c-9", ts=at),
        likes("a", 3),
    ]
    try:
        await events.append("acme", batch(*sample))
        assert metrics.wait_folded()
        hot = db.hot
        assert hot is not None

        def compare() -> None:
            con = db._readers.get()
            try:
                hot.load_all(con, NOW_US)
                whole = {k: hot.get(con, "acme", k, NOW_US) for k in ("inf-1", "inf-2")}
                hot.evict([("acme", "inf-1"), ("acme", "inf-2")])
                single = {k: hot.get(con, "acme", k, NOW_US) for k in ("inf-1", "inf-2")}
            finally:
                db._readers.put(con)
            for key, loaded in whole.items():
                read = single[key]
                assert loaded is not None and read is not None
                assert hour_rows(loaded) == hour_rows(read)
                assert (np.diff(loaded.metric) >= 0).all()  # sorted by metric name
                sums = {
                    "start_us": NOW_US - 3 * HOUR_US,
                    "end_us": NOW_US + HOUR_US,
                    "metrics": ["likes", "views", "shares", "comments"],
                    "platform": None,
                    "campaign": None,
                    "origin_us": NOW_US - 3 * HOUR_US,
                    "grain_us": HOUR_US,
                    "buckets": 4,
                }
                assert loaded.matrix(**sums)[0].tolist() == read.matrix(**sums)[0].tolist()
            assert {r[2] for r in hour_rows(whole["inf-2"])} == {"views", "comments", "likes"}
            assert {r[1] for r in hour_rows(whole["inf-2"])} == {
                "",
                "c-9",
            }  # the rollups keep no campaign as ""

        await asyncio.to_thread(compare)
    finally:
        await events.aclose()
        await metrics.aclose()


async def test_a_matrix_summed_on_the_event_loop_matches_the_tables_and_misses_no_commit(
    tmp_path: Path,
) -> None:
    db, events, metrics = open_store(tmp_path / "hypemeter.duckdb")
    await events.start()
    await metrics.start()
    hourly = CounterQuery(
        NOW_US - 3 * HOUR_US, NOW_US + HOUR_US, ("likes", "views"), Filters("inf-1"), (), Grain.HOUR
    )
    early = from_epoch_us(NOW_US - 2 * HOUR_US + 5)
    try:
        await events.append(
            "acme",
            batch(
                likes("a", 3),
                EventIn(influencer_id="inf-1", platform="x", metric="views", value=7, ts=early),
                EventIn(influencer_id="inf-2", platform="x", metric="likes", value=50, ts=early),
            ),
        )
        assert metrics.wait_folded()
        hot = db.hot
        assert hot is not None
        answer = await metrics.counter_matrix("acme", hourly)  # reads the entry in
        assert answer is not None
        assert {m: v.tolist() for m, v in answer.values.items()} == {
            "likes": [0.0, 0.0, 3.0, 0.0],
            "views": [0.0, 7.0, 0.0, 0.0],
        }
        # The index now holds everything committed: answered without a query thread.
        horizon = db.applied_horizon()
        assert horizon is not None
        cached = queries.cached_matrix("acme", hourly, horizon, hot)
        assert cached is not None
        assert {m: v.tolist() for m, v in cached.values.items()} == {
            m: v.tolist() for m, v in answer.values.items()
        }
        # A commit the index does not hold yet: the event loop leaves it to SQL.
        await events.append("acme", batch(likes("b", 4)))
        db.wait_applied()
        horizon = db.applied_horizon()
        assert horizon is not None
        assert queries.cached_matrix("acme", hourly, horizon, hot) is None
        answer = await metrics.counter_matrix("acme", hourly)
        assert answer is not None
        assert answer.values["likes"].tolist() == [0.0, 0.0, 7.0, 0.0]
    finally:
        await events.aclose()
        await metrics.aclose()


class _Halfway:
    """A reader connection that runs ``meanwhile`` between reading a query's rows and
    handing them over: a read that started before something and ends after it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, meanwhile: Any) -> None:
        self._con = con
        self._meanwhile = meanwhile

    def sql(self, query: str, *, params: object = None) -> Any:
        rows = self._con.sql(query, params=params).to_arrow_table()
        self._meanwhile()
        return SimpleNamespace(to_arrow_table=lambda: rows)


async def test_an_entry_read_before_a_purge_is_not_put_back_after_it(tmp_path: Path) -> None:
    # A purge (like an erasure) rewrites rollups without a commit, so the watermark an
    # entry carries does not tell its rows from those after the purge: the index is
    # dropped, and an entry whose reading began before the drop must not return with
    # the index read back whole after it.
    db, events, metrics = open_store(tmp_path / "hypemeter.duckdb")
    await events.start()
    await metrics.start()
    old = NOW_US - 10 * DAY_US  # inside the hot index's days, past a 5-day retention
    day, cutoff = old - old % DAY_US, NOW_US - 5 * DAY_US
    loop = asyncio.get_running_loop()
    try:
        expired = EventIn(
            influencer_id="inf-1",
            platform="instagram",
            metric="likes",
            value=5,
            event_id="old",
            ts=from_epoch_us(old),
        )
        await events.append("acme", batch(likes("new", 3), expired))
        assert metrics.wait_folded()
        hot, maintainer = db.hot, db.maintainer
        assert hot is not None and maintainer is not None
        assert await asyncio.to_thread(maintainer.wait_idle)
        hot.evict([("acme", "inf-1")])  # the next query reads the entry in

        def purge_meanwhile() -> None:
            purge = db.purge_day("acme", day, cutoff)
            assert asyncio.run_coroutine_threadsafe(purge, loop).result() == 1
            assert maintainer.wait_idle()  # the index is read back whole after the drop
            assert hot.loaded

        def read_halfway() -> HourSeries | None:
            con = db._readers.get()
            try:
                return hot.get(_Halfway(con, purge_meanwhile), "acme", "inf-1", NOW_US)  # type: ignore[arg-type]
            finally:
                db._readers.put(con)

        before = await asyncio.to_thread(read_halfway)
        assert before is not None  # read before the purge: it holds the purged day
        assert day in (before.bucket - before.bucket % DAY_US).tolist()
        kept = hot.peek("acme", "inf-1")
        assert kept is not None
        assert day not in (kept.bucket - kept.bucket % DAY_US).tolist()
        since_the_purged_day = CounterQuery(day, NOW_US + HOUR_US, ("likes",), Filters("inf-1"))
        assert await total(metrics, since_the_purged_day) == 3
    finally:
        await events.aclose()
        await metrics.aclose()
