"""The ports ingest needs: the event log, and the durable, deduplicating event store.

Every port has an explicit lifecycle: ``start`` before first use, ``aclose`` at
shutdown. The embedded and the cluster backends implement it and pass the same
contract tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hypemeter.events.batch import EventBatch
from hypemeter.events.model import MetricDefinition, ValueLimit

if TYPE_CHECKING:
    import pyarrow as pa

# The columns of an export: the wire fields of an event, its time as ``ts_us``.
EXPORT_COLUMNS = (
    "event_id",
    "influencer_id",
    "platform",
    "content_id",
    "campaign_id",
    "metric",
    "kind",
    "value",
    "ts_us",
    "user_id",
    "text",
    "tags",
    "variant",
    "properties",
)


@dataclass(frozen=True, slots=True)
class ExpiredDay:
    """A UTC day of one tenant with events past the retention: what one purge step takes."""

    tenant_id: str
    day_us: int
    events: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What a durable append did with one batch."""

    accepted: int
    duplicates: int
    seq: int
    # The events kept (duplicates left out), snapshots as their deltas, as committed
    # at ``seq`` and ``committed_us``: what live push fans out. None when not known.
    changes: pa.Table | None = None
    committed_us: int = 0


class EventStore(Protocol):
    """The raw event log: durable, deduplicating append."""

    async def start(self) -> None: ...

    async def aclose(self) -> None:
        """Finish pending appends, then release the store."""

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        """Deduplicate by (tenant, event_id) and commit durably before returning.

        Raises Overloaded when the write queue is full and StoreUnavailable
        when the commit fails (nothing of the batch is then stored).
        """

    async def count_events(self, tenant_id: str) -> int:
        """Stored events of one tenant (duplicates never stored)."""

    def export(self, tenant_id: str, *, chunk_rows: int = 50_000) -> AsyncIterator[pa.Table]:
        """A tenant's stored events, in the order they were stored, as tables of
        EXPORT_COLUMNS with at most ``chunk_rows`` rows each; snapshots as their readings."""

    async def erase_influencer(self, tenant_id: str, influencer_id: str) -> int:
        """Delete one influencer's events and everything derived from them (rollups,
        snapshot state), atomically; returns how many events were erased."""

    async def expired_days(self, cutoff_us: int) -> list[ExpiredDay]:
        """The (tenant, UTC day) pairs before ``cutoff_us`` (a day boundary) holding events
        a purge deletes, oldest first. A purge keeps, of each snapshot series (tenant,
        influencer, platform, metric), the newest reading before the cutoff: a gauge's
        value at the start of a range inside the retention is that reading."""

    async def purge_day(self, tenant_id: str, day_us: int, cutoff_us: int) -> int:
        """Delete the tenant's events of one UTC day before ``cutoff_us`` but the kept
        readings, and make the rollup rows of the day's buckets those of what is left,
        atomically; returns how many events were deleted. One short step: ingest waits
        for it at most."""

    async def reclaim(self) -> None:
        """After an erasure: drop the copies of deleted rows the store's files still hold,
        where the store can (the embedded store checkpoints, which empties its WAL, and
        rewrites its file at the next start; PostgreSQL vacuums the tables)."""

    async def check_writable(self) -> None:
        """Raise StoreUnavailable unless a write can commit now."""

    def queue_depth(self) -> int:
        """Events accepted for writing but not yet committed."""

    def size_bytes(self) -> int:
        """Bytes the store occupies on disk, or 0 when unknown."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the event log: the events of one append (or of one group of appends
    committed together), each row naming its tenant in a ``tenant_id`` column."""

    seq: int
    logged_us: int
    table: pa.Table


class EventLog(Protocol):
    """The durable, ordered record of ingested events that the store is built from.

    The embedded profile's is the ingest journal (``FileEventLog``), the cluster's a
    NATS JetStream stream (``JetStreamLog``). An entry stays readable until its
    consumer has committed it to the store (the journal releases it, JetStream's
    work queue drops it on the worker's acknowledgement).
    """

    async def start(self) -> None:
        """Open the log; entries appended before a crash are there again."""

    async def aclose(self) -> None: ...

    async def append(self, tenant_id: str, batch: EventBatch) -> int:
        """Persist the batch durably before returning; the sequence of its (last) entry,
        above that of every entry appended before it."""

    async def read(self, after_seq: int, *, limit: int = 1000) -> list[LogEntry]:
        """The entries the log holds after ``after_seq``, in sequence order, at most
        ``limit``: none missing, none twice."""

    async def check(self) -> None:
        """Raise StoreUnavailable unless an append can be persisted now."""


class LogDelivery(Protocol):
    """One entry taken from a partition of the log by a worker, and how to settle it."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def batch(self) -> EventBatch: ...

    async def ack(self) -> None:
        """Committed: the log drops the entry."""

    async def retry(self, delay: float) -> None:
        """Not committed: deliver the entry again after ``delay`` seconds."""


class PartitionedLog(EventLog, Protocol):
    """An event log that workers consume, one partition each, committing as they go."""

    @property
    def partitions(self) -> int: ...

    async def consume(
        self,
        partition: int,
        handle: Callable[[LogDelivery], Awaitable[None]],
        stopping: asyncio.Event,
    ) -> None:
        """Hand each entry of one partition to ``handle``, in order, until ``stopping``;
        ``handle`` settles an entry before the next one comes."""


class CatalogStore(Protocol):
    """Each tenant's custom metrics and bounds on event values (the tenant store keeps them)."""

    async def add_metric(self, tenant_id: str, metric: MetricDefinition) -> bool:
        """Register a custom metric; False when the tenant already has it."""

    async def list_metrics(self) -> list[tuple[str, MetricDefinition]]:
        """Every custom metric as (tenant_id, definition)."""

    async def set_value_limits(
        self, tenant_id: str, limits: Mapping[str, ValueLimit | None]
    ) -> None:
        """Set a tenant's bounds per metric; None removes the tenant's bound. All or nothing."""

    async def list_value_limits(self) -> list[tuple[str, str, ValueLimit]]:
        """Every tenant's own bounds as (tenant_id, metric, bound)."""
