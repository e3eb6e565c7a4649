"""Exactly-once counting through the ingest service on a real embedded store.

Random batches across tenants, sent in a random order with whole-batch retries,
ids repeated inside a batch, events without ids and invalid events: whatever
the interleaving, each (tenant, event_id) is stored once, every id-less event
is stored each time it is sent, and the service's answers add up.
"""

from __future__ import annotations

import asyncio
import gzip
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from hypemeter.backends.embedded.duckdb_store import (
    DuckDBDatabase,
    DuckDBEventStore,
    DuckDBTenantStore,
    StoreConfig,
)
from hypemeter.changes.feed import ChangeFeed
from hypemeter.clock import FixedClock
from hypemeter.errors import BatchRejected
from hypemeter.events.codec import IngestLimits
from hypemeter.events.commit import CommitStep
from hypemeter.events.service import IngestService

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
TENANTS = ("acme", "globex", "initech")
LIMITS = IngestLimits(
    max_body_bytes=1_000_000,
    max_events=1000,
    max_event_bytes=4096,
    retention_days=400,
    max_future_seconds=3600,
)


@dataclass(frozen=True, slots=True)
class Item:
    event_id: str | None
    valid: bool
    snapshot: bool

    def wire(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "influencer_id": "inf-1",
            "platform": "tiktok" if self.valid else "myspace",
            "metric": "likes",
            "ts": "2026-11-20T13:30:00Z",
            "kind": "snapshot" if self.snapshot else "delta",
            "value": 3,
        }
        if self.event_id is not None:
            event["event_id"] = self.event_id
        return event


@dataclass(frozen=True, slots=True)
class Batch:
    tenant: str
    items: tuple[Item, ...]
    ndjson: bool
    gzipped: bool

    def body(self) -> bytes:
        events = [item.wire() for item in self.items]
        if self.ndjson:
            data = b"\n".join(msgspec.json.encode(e) for e in events) + b"\n"
        else:
            data = msgspec.json.encode(events)
        return gzip.compress(data) if self.gzipped else data


items = st.builds(
    Item,
    event_id=st.one_of(st.none(), st.sampled_from([f"e{i}" for i in range(12)])),
    valid=st.sampled_from([True, True, True, False]),
    snapshot=st.booleans(),
)
batches = st.builds(
    Batch,
    tenant=st.sampled_from(TENANTS),
    items=st.lists(items, min_size=1, max_size=12).map(tuple),
    ndjson=st.booleans(),
    gzipped=st.booleans(),
)


@st.composite
def schedules(draw: st.DrawFn) -> list[Batch]:
    """Every batch at least once, in a random order, with some sent again (retries)."""
    unique = draw(st.lists(batches, min_size=1, max_size=6))
    retries = draw(st.lists(st.sampled_from(unique), max_size=4))
    return draw(st.permutations(unique + retries))


async def no_quota(count: int) -> None:
    """The rate limiter is not under test here."""


async def send_all(root: Path, schedule: list[Batch]) -> tuple[dict[str, int], Counter[str]]:
    """Ingest the schedule; returns the stored count per tenant and summed answers."""
    clock = FixedClock(NOW_US)
    config = StoreConfig(
        dedup_window_us=24 * 3600 * 1_000_000,
        dedup_memory_entries=1000,
        queue_limit=100_000,
        commit_max_events=10_000,
    )
    db = DuckDBDatabase(root / "hypemeter.duckdb", clock=clock, config=config)
    store, tenants = DuckDBEventStore(db), DuckDBTenantStore(db)
    service = IngestService(CommitStep(store, ChangeFeed()), tenants, clock, LIMITS)
    await store.start()
    totals: Counter[str] = Counter()
    try:
        for batch in schedule:
            try:
                result = await service.ingest(
                    batch.tenant,
                    batch.body(),
                    content_type="application/x-ndjson" if batch.ndjson else "application/json",
                    content_encoding="gzip" if batch.gzipped else None,
                    quota=no_quota,
                )
            except BatchRejected as rejected:
                totals["rejected"] += len(rejected.rejected)
                continue
            totals["accepted"] += result.accepted
            totals["duplicates"] += result.duplicates
            totals["rejected"] += len(result.rejected)
        counts = {tenant: await store.count_events(tenant) for tenant in TENANTS}
    finally:
        await store.aclose()
    return counts, totals


@settings(max_examples=40, deadline=None)
@given(schedules())
def test_each_event_id_counts_once_per_tenant(schedule: list[Batch]) -> None:
    expected: dict[str, int] = dict.fromkeys(TENANTS, 0)
    distinct: set[tuple[str, str]] = set()
    valid_sent = invalid_sent = 0
    for batch in schedule:
        for item in batch.items:
            if not item.valid:
                invalid_sent += 1
            elif item.event_id is None:
                expected[batch.tenant] += 1
                valid_sent += 1
            else:
                distinct.add((batch.tenant, item.event_id))
                valid_sent += 1
    for tenant, _ in distinct:
        expected[tenant] += 1

    with tempfile.TemporaryDirectory() as root:
        counts, totals = asyncio.run(send_all(Path(root), schedule))

    assert counts == expected
    assert totals["accepted"] == sum(counts.values())
    assert totals["accepted"] + totals["duplicates"] == valid_sent
    assert totals["rejected"] == invalid_sent
