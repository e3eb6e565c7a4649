"""The EventStore port of an API process in the cluster profile: append goes to the log.

Appends return once JetStream has persisted the events; workers commit them to
the store later (``hypemeter worker``). Counts, sizes and readiness read the
store and the log behind it.

Before publishing, a request's events are checked against the store's index of
stored ids and against each other: copies of stored events, and repeats inside
the request, are answered as duplicates and never published. A copy of an event
that is still in the log (published, not yet committed) cannot be seen there: it
is answered as accepted, and the worker drops it (the store's index is exact).
A retried request within JetStream's duplicate window yields identical messages,
which JetStream drops before any worker sees them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from hypemeter.backends.cluster.nats_log import JetStreamLog
from hypemeter.backends.cluster.postgres_store import PostgresEventStore
from hypemeter.errors import Overloaded
from hypemeter.events.batch import EventBatch
from hypemeter.events.ports import AppendResult, ExpiredDay


class LoggedEventStore:
    def __init__(self, log: JetStreamLog, store: PostgresEventStore, *, queue_limit: int) -> None:
        self._log = log
        self._store = store
        self._queue_limit = queue_limit
        self._pending = 0  # events of requests between arrival and JetStream's ack

    async def start(self) -> None:
        await self._store.start()
        await self._log.start()

    async def aclose(self) -> None:
        await self._log.aclose()
        await self._store.aclose()

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        """Publish the request's new events; no change set (the committing worker sends it).

        A request counts against ``queue_limit`` from its arrival (the id check is part
        of its wait) until JetStream has persisted it; one that would pass the limit is
        shed with Overloaded, unless nothing else is waiting.
        """
        size = len(batch)
        if self._pending and self._pending + size > self._queue_limit:
            raise Overloaded.queue_full(self._pending, self._queue_limit)
        self._pending += size
        try:
            return await self._append(tenant_id, batch)
        finally:
            self._pending -= size

    async def _append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        table = batch.arrow()
        keep = await self._fresh(tenant_id, table)
        kept = int(keep.sum())
        if kept == 0:
            return AppendResult(0, len(table), 0)
        fresh = table if kept == len(table) else table.filter(pa.array(keep))
        published = await self._log.publish(tenant_id, EventBatch(table=fresh))
        return AppendResult(published.accepted, len(table) - published.accepted, published.seq)

    async def _fresh(self, tenant_id: str, table: pa.Table) -> npt.NDArray[np.bool_]:
        """Keep mask: the first copy of each id that the store does not have yet."""
        ids = table.column("event_id").to_pylist()
        named = table.column("has_id").to_pylist()
        keep = np.zeros(len(ids), dtype=np.bool_)
        first: dict[str, int] = {}
        for i, (event_id, has_id) in enumerate(zip(ids, named, strict=True)):
            if not has_id:
                keep[i] = True
            elif event_id not in first:
                first[event_id] = i
        stored = await self._store.known_ids(tenant_id, list(first))
        for event_id, i in first.items():
            keep[i] = event_id not in stored
        return keep

    def export(self, tenant_id: str, *, chunk_rows: int = 50_000) -> AsyncIterator[pa.Table]:
        return self._store.export(tenant_id, chunk_rows=chunk_rows)

    async def count_events(self, tenant_id: str) -> int:
        """Events committed to the store so far (the log may hold more)."""
        return await self._store.count_events(tenant_id)

    async def erase_influencer(self, tenant_id: str, influencer_id: str) -> int:
        """Erase what the store holds; events still in the log are committed later."""
        return await self._store.erase_influencer(tenant_id, influencer_id)

    async def expired_days(self, cutoff_us: int) -> list[ExpiredDay]:
        """Days the store holds; events still in the log are purged by a later pass."""
        return await self._store.expired_days(cutoff_us)

    async def purge_day(self, tenant_id: str, day_us: int, cutoff_us: int) -> int:
        return await self._store.purge_day(tenant_id, day_us, cutoff_us)

    async def reclaim(self) -> None:
        await self._store.reclaim()

    async def check_writable(self) -> None:
        await self._log.check()
        await self._store.check_writable()

    async def check_log(self) -> None:
        await self._log.check()

    def queue_depth(self) -> int:
        return self._pending

    def size_bytes(self) -> int:
        return self._store.size_bytes()
