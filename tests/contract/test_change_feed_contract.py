"""The change feed: commits announced once, read by each reader at its own pace, on every
store; and carried between processes by every bus, never echoed to its announcer."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
import pytest

from hypemeter.changes.codec import COLUMNS, ChangeSet
from hypemeter.changes.feed import ChangeFeed, ChangeSubscription
from hypemeter.errors import StoreUnavailable
from hypemeter.events.commit import CommitStep
from hypemeter.events.ports import AppendResult, EventStore
from hypemeter.live.ports import LiveBus

from .test_event_store_contract import batch, event, ids

GUARD_SECONDS = 10  # only to turn a hang into a failure; no test depends on timing
COMMITS = 20


async def take(sub: ChangeSubscription, n: int) -> list[ChangeSet | None]:
    iterator = aiter(sub)
    async with asyncio.timeout(GUARD_SECONDS):
        return [await anext(iterator) for _ in range(n)]


async def test_a_slow_reader_delays_neither_acknowledgements_nor_other_readers(
    event_store: EventStore,
) -> None:
    feed = ChangeFeed()
    commit = CommitStep(event_store, feed)
    slow = feed.subscribe(None, max_pending=3)  # never read while the commits run
    fast = feed.subscribe("acme")
    seen: list[ChangeSet | None] = []

    async def read_fast() -> None:
        async for change in fast:
            seen.append(change)
            if len(seen) == COMMITS:
                return

    reader = asyncio.create_task(read_fast())
    acks: list[AppendResult] = []
    for n in range(COMMITS):
        acks.append(await commit.append("acme", ids(f"e{n}", f"e{n}-b")))
    async with asyncio.timeout(GUARD_SECONDS):
        await reader

    assert [a.accepted for a in acks] == [2] * COMMITS
    assert [c.seq for c in seen if c is not None] == [a.seq for a in acks]
    assert all(c is not None and c.tenant_id == "acme" for c in seen)
    assert [c.table.column("event_id").to_pylist() for c in seen if c is not None] == [
        [f"e{n}", f"e{n}-b"] for n in range(COMMITS)
    ]
    assert fast.position == acks[-1].seq and fast.dropped == 0
    # The slow reader lost the oldest, reads a gap where it must repair, then the newest.
    assert slow.dropped == COMMITS - 3
    late = await take(slow, 4)
    assert late[0] is None
    assert [c.seq for c in late[1:] if c is not None] == [a.seq for a in acks[-3:]]
    assert slow.position == acks[-1].seq


async def test_duplicates_and_other_tenants_are_not_announced_to_a_tenant_reader(
    event_store: EventStore,
) -> None:
    feed = ChangeFeed()
    commit = CommitStep(event_store, feed)
    acme, everyone = feed.subscribe("acme"), feed.subscribe()
    first = await commit.append("acme", ids("a", "b"))
    again = await commit.append("acme", ids("a", "b"))  # all duplicates: nothing committed
    other = await commit.append("other", batch(event("x", metric="comments")))
    assert (first.accepted, again.accepted, other.accepted) == (2, 0, 1)
    (mine,) = await take(acme, 1)
    assert mine is not None and mine.table.column("event_id").to_pylist() == ["a", "b"]
    both = await take(everyone, 2)
    assert [(c.tenant_id, c.seq) for c in both if c is not None] == [
        ("acme", first.seq),
        ("other", other.seq),
    ]
    assert feed.announced == 2


def change_table(*event_ids: str) -> pa.Table:
    n = len(event_ids)
    columns: dict[str, list[object]] = {name: [None] * n for name in COLUMNS}
    columns.update(
        event_id=list(event_ids),
        influencer_id=["inf-1"] * n,
        platform=["instagram"] * n,
        metric=["likes"] * n,
        kind=["delta"] * n,
        value=[1.0] * n,
        delta=[1.0] * n,
        ts=[1_795_183_200_000_000] * n,
    )
    types = {"value": pa.float64(), "delta": pa.float64(), "ts": pa.int64()}
    types["tags"] = pa.list_(pa.string())
    return pa.table(
        {name: pa.array(columns[name], types.get(name, pa.string())) for name in COLUMNS}
    )


async def test_the_bus_carries_change_sets_to_other_processes_and_never_back(
    bus: LiveBus,
) -> None:
    worker, api = ChangeFeed(bus), ChangeFeed(bus)  # two processes sharing one bus
    tenant, every, own = api.subscribe("acme"), api.subscribe(), worker.subscribe()
    for sub in (tenant, every, own):
        await sub.ready()
    await worker.announce(ChangeSet("acme", 7, 123, change_table("a", "b")))
    await worker.announce(ChangeSet("other", 8, 456, change_table("c")))

    (carried,) = await take(tenant, 1)
    assert carried is not None
    assert (carried.tenant_id, carried.seq, carried.committed_us) == ("acme", 7, 123)
    assert carried.table.column("event_id").to_pylist() == ["a", "b"]
    assert [(c.tenant_id, c.seq) for c in await take(every, 2) if c is not None] == [
        ("acme", 7),
        ("other", 8),
    ]
    # The announcing process reads its own commits once: from itself, not from the bus.
    assert [c.seq for c in await take(own, 2) if c is not None] == [7, 8]
    await worker.announce(ChangeSet("acme", 9, 789, change_table("d")))
    assert [c.seq for c in await take(own, 1) if c is not None] == [9]
    assert [c.seq for c in await take(tenant, 1) if c is not None] == [9]
    await api.aclose()
    await worker.aclose()


async def test_a_rewrite_is_a_gap_for_the_tenants_readers_in_every_process(bus: LiveBus) -> None:
    here, there = ChangeFeed(bus), ChangeFeed(bus)
    mine, theirs, everyone, other = (
        here.subscribe("acme"),
        there.subscribe("acme"),
        there.subscribe(),
        there.subscribe("other"),
    )
    for sub in (mine, theirs, everyone, other):
        await sub.ready()
    await here.rewritten("acme")  # an erasure in this process
    await here.announce(ChangeSet("acme", 3, 30, change_table("after")))
    await here.announce(ChangeSet("other", 4, 40, change_table("x")))
    for sub in (mine, theirs, everyone):
        first = await take(sub, 1)
        assert first == [None]  # repair from the store before reading on
    assert [c.seq for c in await take(theirs, 1) if c is not None] == [3]
    assert [c.seq for c in await take(everyone, 2) if c is not None] == [3, 4]
    assert [c.seq for c in await take(other, 1) if c is not None] == [4]  # no gap
    assert other.dropped == 0 and theirs.dropped == 1
    await here.aclose()
    await there.aclose()


class CommitsThenLosesTheConnection:
    """A store whose commit succeeds but whose confirmation is lost on the way back."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def append(self, tenant_id: str, batch: Any) -> AppendResult:
        await self.store.append(tenant_id, batch)
        raise StoreUnavailable("connection lost while the commit was being confirmed")


async def test_a_commit_of_unknown_outcome_is_a_gap_for_the_tenants_readers(
    event_store: EventStore,
) -> None:
    feed = ChangeFeed()
    acme, other = feed.subscribe("acme"), feed.subscribe("other")
    commit = CommitStep(CommitsThenLosesTheConnection(event_store), feed)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        await commit.append("acme", ids("a"))
    assert await take(acme, 1) == [None]  # the commit may have happened: repair
    assert acme.dropped == 1 and other.dropped == 0
    assert (await event_store.append("acme", ids("a"))).duplicates == 1  # it had
