"""EventStore contract: durable, deduplicating append; run against every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hypemeter.errors import Overloaded, StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.events.ports import EXPORT_COLUMNS, AppendResult, EventStore

from .conftest import EVENT_STORE_BACKENDS


@pytest.fixture(params=EVENT_STORE_BACKENDS)
async def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The stores, and the cluster ingest path (JetStream, then a worker into PostgreSQL)."""
    backend = request.param(tmp_path)
    yield backend
    await backend.aclose()


NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z, the harness clock
MINUTE_US = 60 * 1_000_000


def event(event_id: str | None = None, **fields: Any) -> EventIn:
    values: dict[str, Any] = {
        "influencer_id": "inf-1",
        "platform": "instagram",
        "metric": "likes",
        "ts": from_epoch_us(NOW_US - MINUTE_US),
        "event_id": event_id,
    }
    values.update(fields)
    return EventIn(**values)


def batch(*events: EventIn) -> EventBatch:
    stamps = [to_epoch_us(e.ts) for e in events if e.ts is not None]
    return EventBatch.from_events(list(events), stamps)


def ids(*names: str | None) -> EventBatch:
    return batch(*(event(name) for name in names))


def reading(event_id: str, value: float, minutes_ago: int, **fields: Any) -> EventIn:
    return event(
        event_id,
        kind="snapshot",
        value=value,
        ts=from_epoch_us(NOW_US - minutes_ago * MINUTE_US),
        **fields,
    )


async def test_append_reports_accepted_and_commits(event_store: EventStore) -> None:
    result = await event_store.append("acme", ids("e1", "e2", "e3"))
    assert (result.accepted, result.duplicates) == (3, 0)
    assert await event_store.count_events("acme") == 3
    assert event_store.queue_depth() == 0


async def test_repeat_ids_across_batches_count_once(event_store: EventStore) -> None:
    first = await event_store.append("acme", ids("e1", "e2"))
    again = await event_store.append("acme", ids("e2", "e3", "e1"))
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (1, 2)
    assert again.seq > first.seq
    assert await event_store.count_events("acme") == 3


async def test_repeat_ids_within_a_batch_count_once(event_store: EventStore) -> None:
    result = await event_store.append("acme", ids("e1", "e1", "e2", "e1", "e2"))
    assert (result.accepted, result.duplicates) == (2, 3)
    assert await event_store.count_events("acme") == 2


async def test_retried_batch_is_all_duplicates(event_store: EventStore) -> None:
    await event_store.append("acme", ids("e1", "e2", "e3"))
    retry = await event_store.append("acme", ids("e1", "e2", "e3"))
    assert (retry.accepted, retry.duplicates) == (0, 3)
    assert await event_store.count_events("acme") == 3


async def test_events_without_id_are_never_deduplicated(event_store: EventStore) -> None:
    first = await event_store.append("acme", ids(None, None, "e1"))
    again = await event_store.append("acme", ids(None, "e1"))
    assert (first.accepted, first.duplicates) == (3, 0)
    assert (again.accepted, again.duplicates) == (1, 1)
    assert await event_store.count_events("acme") == 4


async def test_concurrent_appends_of_the_same_ids_count_once(
    store_backend: Any, event_store: EventStore
) -> None:
    results = await asyncio.gather(
        *(event_store.append("acme", ids("e1", "e2", f"own-{n}")) for n in range(8))
    )
    if store_backend.exact_in_flight:
        assert sum(r.accepted for r in results) == 2 + 8
        assert sum(r.duplicates for r in results) == 2 * 7
    else:  # copies still in the log were answered as accepted; the worker dropped them
        assert sum(r.accepted for r in results) + sum(r.duplicates for r in results) == 24
        assert sum(r.accepted for r in results) >= 10
    assert await event_store.count_events("acme") == 10


async def test_tenants_are_isolated(event_store: EventStore) -> None:
    acme = await event_store.append("acme", ids("e1", "e2"))
    other = await event_store.append("other", ids("e1"))
    assert (acme.accepted, other.accepted) == (2, 1)
    assert other.duplicates == 0
    assert await event_store.count_events("acme") == 2
    assert await event_store.count_events("other") == 1
    assert await event_store.count_events("nobody") == 0


async def test_dedup_survives_close_and_reopen(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    await store.append("acme", ids("e1", "e2", None))
    await store.aclose()
    reopened = await store_backend.open_event_store()
    result = await reopened.append("acme", ids("e1", "e3", "e2", None))
    assert (result.accepted, result.duplicates) == (2, 2)
    assert await reopened.count_events("acme") == 5
    assert await reopened.count_events("other") == 0


async def test_snapshots_become_deltas(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    await store.append("acme", batch(reading("s1", 100, 50), reading("s2", 130, 40)))
    await store.append("acme", batch(reading("s3", 120, 30)))
    await store.append("acme", batch(reading("s-old", 500, 45), event("d1", value=7)))
    await store.append("acme", batch(reading("s4", 150, 20), reading("s1", 999, 10)))
    deltas = await store_backend.stored_deltas(store, "acme")
    assert deltas == {"s1": 100, "s2": 30, "s3": -10, "s-old": 0, "d1": 7, "s4": 30}


async def test_snapshot_series_are_separate(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    await store.append(
        "acme",
        batch(
            reading("a1", 10, 50, content_id="post-a"),
            reading("b1", 40, 50, content_id="post-b"),
            reading("f1", 1000, 50, metric="followers"),
            reading("a2", 15, 40, content_id="post-a"),
        ),
    )
    await store.append("other", batch(reading("a1", 12, 30, content_id="post-a")))
    deltas = await store_backend.stored_deltas(store, "acme")
    assert deltas == {"a1": 10, "b1": 40, "f1": 1000, "a2": 5}


async def test_snapshot_state_survives_reopen(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    await store.append("acme", batch(reading("s1", 100, 50)))
    await store.aclose()
    reopened = await store_backend.open_event_store()
    await reopened.append("acme", batch(reading("s2", 90, 40), reading("s0", 1, 60)))
    deltas = await store_backend.stored_deltas(reopened, "acme")
    assert deltas == {"s1": 100, "s2": -10, "s0": 0}


async def test_readings_not_yet_flushed_are_replayed_after_reopen(store_backend: Any) -> None:
    """The snapshot state is written lazily; a reopen rebuilds it from the raw events."""
    store = await store_backend.open_event_store()
    for n, value in enumerate((100, 120, 125, 121)):
        await store.append("acme", batch(reading(f"r{n}", value, 50 - n)))
    await store.aclose()
    reopened = await store_backend.open_event_store()
    await reopened.append("acme", batch(reading("r9", 150, 10)))
    deltas = await store_backend.stored_deltas(reopened, "acme")
    assert deltas == {"r0": 100, "r1": 20, "r2": 5, "r3": -4, "r9": 29}


async def test_duplicate_snapshot_changes_no_state(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    await store.append("acme", batch(reading("s1", 100, 50)))
    retry = await store.append("acme", batch(reading("s1", 100, 50), reading("s2", 110, 40)))
    assert (retry.accepted, retry.duplicates) == (1, 1)
    deltas = await store_backend.stored_deltas(store, "acme")
    assert deltas == {"s1": 100, "s2": 10}


async def test_appends_committed_together_dedup_and_chain_snapshots(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    async with store_backend.stalled(store):
        first = asyncio.ensure_future(store.append("acme", batch(reading("s1", 100, 50))))
        second = asyncio.ensure_future(
            store.append("acme", batch(reading("s1", 100, 50), reading("s2", 130, 40)))
        )
        third = asyncio.ensure_future(store.append("acme", batch(reading("s3", 90, 30))))
        await asyncio.sleep(0)
    results = await asyncio.gather(first, second, third)
    if store_backend.exact_in_flight:
        assert [(r.accepted, r.duplicates) for r in results] == [(1, 0), (1, 1), (1, 0)]
    else:  # the copy of s1 was still in the log: answered as accepted, dropped by the worker
        assert [(r.accepted, r.duplicates) for r in results] == [(1, 0), (2, 0), (1, 0)]
    deltas = await store_backend.stored_deltas(store, "acme")
    if store_backend.exact_in_flight:
        assert deltas == {"s1": 100, "s2": 30, "s3": -40}
    else:
        # Concurrent requests reach the log in no set order (each waits for its id check
        # first); a reading older than the latest committed one adds nothing, so the
        # series still sums to its latest reading.
        assert sorted(deltas) == ["s1", "s2", "s3"]
        assert sum(deltas.values()) == 90


def rows(*events: EventIn) -> EventBatch:
    """A batch as the server process hands small requests over: events, not yet Arrow."""
    stamps = [to_epoch_us(e.ts) for e in events if e.ts is not None]
    return EventBatch.of_rows(list(events), stamps)


async def test_row_and_table_batches_mix_in_one_group(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    async with store_backend.stalled(store):
        sent = [
            ("acme", rows(event("a"), event("b"))),
            ("other", batch(event("a"), event("c"))),
            ("acme", rows(event("b"), event("d"))),
            ("acme", rows(reading("s1", 100, 50))),
            ("acme", batch(event("a"), reading("s2", 130, 40))),
        ]
        futures = [asyncio.ensure_future(store.append(t, b)) for t, b in sent]
        await asyncio.sleep(0)
    results = await asyncio.gather(*futures)
    exact = [(2, 0), (2, 0), (1, 1), (1, 0), (1, 1)]
    if store_backend.exact_in_flight:
        assert [(r.accepted, r.duplicates) for r in results] == exact
    else:
        # A copy of an event still in the log is answered as accepted (the worker drops
        # it); one the worker committed first is a duplicate. Either way each request
        # is answered for every event, and the counts below stay exact.
        answered = [(r.accepted, r.duplicates) for r in results]
        assert [a + d for a, d in answered] == [a + d for a, d in exact]
        assert all(a >= e for (a, _), (e, _) in zip(answered, exact, strict=True))
    assert await store.count_events("acme") == 5
    assert await store.count_events("other") == 2
    deltas = await store_backend.stored_deltas(store, "acme")
    if store_backend.exact_in_flight:
        assert (deltas["s1"], deltas["s2"]) == (100, 30)
    else:  # concurrent requests reach the log in no set order (see above)
        assert deltas["s1"] + deltas["s2"] == 130


async def test_full_queue_sheds_with_overloaded(store_backend: Any) -> None:
    store = await store_backend.open_event_store(queue_limit=3)
    async with store_backend.stalled(store):
        waiting = asyncio.ensure_future(store.append("acme", ids("a", "b")))
        await asyncio.sleep(0)
        assert store.queue_depth() == 2
        with pytest.raises(Overloaded) as caught:
            await store.append("acme", ids("c", "d"))
        assert caught.value.retry_after >= 1
        assert "ingest_queue_events" in caught.value.message
    assert (await waiting).accepted == 2
    assert await store.count_events("acme") == 2
    assert store.queue_depth() == 0


async def test_concurrent_appends_beyond_the_queue_limit(store_backend: Any) -> None:
    store = await store_backend.open_event_store(queue_limit=3)
    async with store_backend.stalled(store):
        tasks = [asyncio.ensure_future(store.append("acme", ids(f"e{n}"))) for n in range(10)]
        await asyncio.sleep(0)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    accepted = [o for o in outcomes if isinstance(o, AppendResult)]
    shed = [o for o in outcomes if isinstance(o, Overloaded)]
    assert (len(accepted), len(shed)) == (3, 7)
    assert all(r.accepted == 1 for r in accepted)
    assert await store.count_events("acme") == 3


async def test_batch_larger_than_the_queue_is_taken_when_idle(store_backend: Any) -> None:
    store = await store_backend.open_event_store(queue_limit=3)
    result = await store.append("acme", ids(*(f"e{n}" for n in range(10))))
    assert result.accepted == 10


async def test_check_writable(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    assert await store.check_writable() is None
    assert await store.count_events("acme") == 0
    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.check_writable()


async def test_closed_store_refuses_appends(store_backend: Any) -> None:
    store = await store_backend.open_event_store()
    await store.aclose()
    with pytest.raises(StoreUnavailable):
        await store.append("acme", ids("e1"))


async def test_size_is_reported(event_store: EventStore) -> None:
    await event_store.append("acme", ids("e1"))
    assert event_store.size_bytes() > 0


async def test_append_returns_the_kept_events_as_its_change_set(
    store_backend: Any, event_store: EventStore
) -> None:
    await event_store.append("acme", batch(reading("r-1", 100, 3)))
    result = await event_store.append(
        "acme", batch(event("c-1"), event("c-1"), reading("r-2", 130, 2), event("r-1"))
    )
    assert (result.accepted, result.duplicates) == (2, 2)
    if not store_backend.exact_in_flight:
        # The committing worker sends the change set (the deltas are known only there).
        assert result.changes is None
        deltas = await store_backend.stored_deltas(event_store, "acme")
        assert deltas == {"r-1": 100.0, "c-1": 1.0, "r-2": 30.0}
        return
    assert result.changes is not None
    kept = result.changes.to_pylist()
    assert [row["event_id"] for row in kept] == ["c-1", "r-2"]
    # A snapshot reading travels as its delta against the previous reading.
    assert [(row["kind"], row["value"], row["delta"]) for row in kept] == [
        ("delta", 1.0, 1.0),
        ("snapshot", 130.0, 30.0),
    ]
    assert result.committed_us > 0


async def test_export_gives_the_stored_events_in_order(event_store: EventStore) -> None:
    await event_store.append("acme", batch(reading("r-1", 100, 5), event("l-1", value=2)))
    await event_store.append("other", batch(event("o-1")))
    await event_store.append(
        "acme",
        batch(
            event("l-1", value=9),  # a duplicate: never stored
            reading("r-2", 130, 4, content_id="post-1", tags=["a", "b"]),
            event(None, user_id="u-1", text="hi", properties={"k": 1}),
        ),
    )
    chunks = [chunk async for chunk in event_store.export("acme", chunk_rows=2)]
    assert [chunk.num_rows for chunk in chunks] == [2, 2]
    assert all(chunk.column_names == list(EXPORT_COLUMNS) for chunk in chunks)
    rows = [row for chunk in chunks for row in chunk.to_pylist()]
    assert [r["event_id"] for r in rows[:3]] == ["r-1", "l-1", "r-2"]
    # Snapshots are exported as the readings sent, not as the deltas stored.
    assert [(r["kind"], r["value"]) for r in rows] == [
        ("snapshot", 100.0),
        ("delta", 2.0),
        ("snapshot", 130.0),
        ("delta", 1.0),
    ]
    assert rows[0]["ts_us"] == NOW_US - 5 * MINUTE_US
    assert (rows[2]["content_id"], rows[2]["tags"]) == ("post-1", ["a", "b"])
    named = rows[3]
    assert named["event_id"]  # the server named it
    assert (named["user_id"], named["text"], named["properties"]) == ("u-1", "hi", '{"k":1}')
    assert [chunk async for chunk in event_store.export("nobody")] == []
