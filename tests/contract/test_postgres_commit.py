"""The PostgreSQL commit under the cluster's delivery rules.

JetStream delivers a message at least once: a worker that dies (or stalls past the
ack wait) before acknowledging leaves it to be redelivered, possibly to another
worker while the first one is still committing. Each worker groups the messages it
holds into one transaction, whose rollup rows are grouped in memory. Here two
PostgresDatabase pools on one schema stand for two workers, and the rollups a
commit leaves must equal what a rebuild (SQL over the raw events) computes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hypemeter.backends.cluster.postgres_schema import ROLLUP_KEYS, ROLLUP_TABLES
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import EventIn, from_epoch_us, to_epoch_us
from hypemeter.events.ports import EventStore
from hypemeter.metrics.model import HOUR_US, MINUTE_US
from hypemeter.metrics.ports import MetricsStore

from .conftest import NOW_US, POSTGRES_DSN, PostgresBackend

HOUR0 = NOW_US - NOW_US % HOUR_US - 3 * HOUR_US


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[PostgresBackend]:
    harness = PostgresBackend(tmp_path)
    yield harness
    await harness.aclose()


def event(event_id: str, metric: str, value: float, minutes: int, **fields: Any) -> EventIn:
    values: dict[str, Any] = {
        "event_id": event_id,
        "influencer_id": "ana",
        "platform": "instagram",
        "metric": metric,
        "value": value,
        "ts": from_epoch_us(HOUR0 + minutes * MINUTE_US),
    }
    values.update(fields)
    return EventIn(**values)


def message(*events: EventIn) -> EventBatch:
    """A batch as a worker reads it from the log (every event carries its id)."""
    stamps = [to_epoch_us(e.ts) for e in events if e.ts is not None]
    return EventBatch.from_events(list(events), stamps)


MIXED = (
    event("l1", "likes", 1, 1, content_id="post-1", campaign_id="spring", tags=["a", "b"]),
    event("l2", "likes", 2, 2, content_id="post-1", tags=["b", 'q"uote', "c,d"]),
    event("c1", "comments", 1, 3, content_id="post-1", text="nice"),
    event("c2", "comments", 1, 3, content_id="post-1", text="wow\nsuch"),
    event("v1", "views", 64, 61, content_id="post-2"),
    event("f1", "followers", 1000, 5, kind="snapshot"),
    event("f2", "followers", 1010, 65, kind="snapshot"),
    event("o1", "likes", 4, 70, influencer_id="bo", platform="tiktok"),
)


async def rollups(backend: PostgresBackend) -> dict[str, list[tuple[Any, ...]]]:
    con = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": backend.schema})
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in ROLLUP_TABLES:
            keys = ", ".join(ROLLUP_KEYS[table])
            rows = await con.fetch(f"SELECT * FROM {table} ORDER BY {keys}")
            out[table] = [tuple(row.values()) for row in rows]
        return out
    finally:
        await con.close()


async def rebuilt(backend: PostgresBackend, events: EventStore) -> dict[str, list[Any]]:
    metrics: MetricsStore = await backend.open_metrics_store(events)
    await metrics.rebuild(lambda done, total: None)
    return await rollups(backend)


async def test_a_message_committed_by_two_workers_counts_once(backend: PostgresBackend) -> None:
    first, second = await backend.open_event_store(), await backend.open_event_store()
    sent = message(*MIXED)
    both = await asyncio.gather(first.append("acme", sent), second.append("acme", sent))
    assert sorted((r.accepted, r.duplicates) for r in both) == [(0, 8), (8, 0)]
    redelivered = await second.append("acme", sent)
    assert (redelivered.accepted, redelivered.duplicates) == (0, 8)
    assert await first.count_events("acme") == 8
    deltas = await backend.stored_deltas(first, "acme")
    assert (deltas["f1"], deltas["f2"], deltas["l2"]) == (1000, 10, 2)
    committed = await rollups(backend)
    tenant_hour = {r[1:5]: r[5:] for r in committed["rollup_tenant_hour"]}
    assert tenant_hour == {
        ("comments", HOUR0, "instagram", ""): (2, 2),
        ("followers", HOUR0, "instagram", ""): (1000, 1),
        ("followers", HOUR0 + HOUR_US, "instagram", ""): (10, 1),
        ("likes", HOUR0, "instagram", ""): (2, 1),
        ("likes", HOUR0, "instagram", "spring"): (1, 1),
        ("likes", HOUR0 + HOUR_US, "tiktok", ""): (4, 1),
        ("views", HOUR0 + HOUR_US, "instagram", ""): (64, 1),
    }
    store = await backend.open_event_store()
    assert await rebuilt(backend, store) == committed


async def test_rollups_of_a_multi_message_commit_equal_a_rebuild(
    backend: PostgresBackend,
) -> None:
    store = await backend.open_event_store()
    await store.append("acme", message(event("c0", "comments", 1, 3, content_id="post-1")))
    sent = [
        ("acme", message(*MIXED[:3])),
        ("other", message(*MIXED[:2])),
        ("acme", message(*MIXED[1:6])),  # l2 and c1 again: duplicates of the first message
        (
            "acme",
            message(*MIXED[5:], event("c3", "comments", 1, 3, content_id="post-1", text="zz")),
        ),
    ]
    async with backend.stalled(store):
        futures = [asyncio.ensure_future(store.append(t, b)) for t, b in sent]
        await asyncio.sleep(0)
    results = await asyncio.gather(*futures)
    assert len({r.seq for r in results}) == 1  # one transaction
    assert [(r.accepted, r.duplicates) for r in results] == [(3, 0), (2, 0), (3, 2), (3, 1)]
    committed = await rollups(backend)
    samples = {r[:3]: (r[4], r[5], r[7], r[8]) for r in committed["rollup_engagement_hour"]}
    # Ties in time: the greatest text; c0 (no text) counts but is no sample.
    assert samples[("acme", HOUR0, "post-1")] == (7, 6, HOUR0 + 3 * MINUTE_US, "zz")
    tags = {r[4]: r[5] for r in committed["rollup_engagement_tags_hour"] if r[0] == "acme"}
    assert tags == {"a": 1, "b": 2, 'q"uote': 1, "c,d": 1}
    assert await rebuilt(backend, store) == committed
