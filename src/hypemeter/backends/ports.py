"""The ports: small async Protocols each backend implements.

Every port has an explicit lifecycle: ``start`` before first use, ``aclose``
at shutdown. The embedded backends (DuckDB, in-memory bus) and the cluster
ones implement the same Protocols and pass the same contract tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from hypemeter.auth.model import ApiKey, Scope, Tenant, limits_from_json, limits_to_json
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import MetricDefinition, ValueLimit
from hypemeter.metrics.model import AccountReadings, Grain
from hypemeter.registry.model import RegistryRecord

T = TypeVar("T")

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

# The dimensions counters can be grouped by.
DIMENSIONS = ("influencer_id", "platform", "campaign_id", "content_id")


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
class Filters:
    """Equality filters of a query; None matches everything."""

    influencer_id: str | None = None
    platform: str | None = None
    campaign_id: str | None = None
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class CounterQuery:
    """Sums of counted values (and event counts) over ``[start_us, end_us)``.

    Rows are grouped by the dimensions in ``by`` (events lacking a dimension's
    value are left out) and, when ``grain`` is set, by bucket of that grain.
    """

    start_us: int
    end_us: int
    metrics: tuple[str, ...]
    filters: Filters = Filters()
    by: tuple[str, ...] = ()
    grain: Grain | None = None


@dataclass(frozen=True, slots=True)
class CounterRow:
    key: tuple[str, ...]
    bucket: int | None
    metric: str
    total: float
    events: int


@dataclass(frozen=True, slots=True)
class CounterMatrix:
    """Bucketed counter sums as arrays: ``values[metric][i]`` is the bucket at
    ``origin_us + i * grain_us``; every bucket of the query's range is there."""

    origin_us: int
    grain_us: int
    values: dict[str, npt.NDArray[np.float64]]
    rows_read: int


@dataclass(frozen=True, slots=True)
class GaugeQuery:
    """Readings of gauge metrics per account (influencer, platform), see AccountReadings."""

    start_us: int
    end_us: int
    metrics: tuple[str, ...]
    influencer_ids: tuple[str, ...] | None = None
    platform: str | None = None
    grain: Grain | None = None


@dataclass(frozen=True, slots=True)
class GaugeRow:
    influencer_id: str
    platform: str
    metric: str
    readings: AccountReadings


@dataclass(frozen=True, slots=True)
class TrendingQuery:
    """Content items with at least ``min_interactions`` engagement events in the range.

    Ordered by total engagement descending, then content id; ``after`` is the
    (engagement, content id) of the last row of the previous page.
    """

    start_us: int
    end_us: int
    platform: str | None
    min_interactions: int
    after: tuple[float, str] | None
    limit: int


@dataclass(frozen=True, slots=True)
class TrendingRow:
    content_id: str
    interactions: int
    engagement: float
    latest_us: int
    sample_text: str | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    interactions: int
    engagement: float
    platforms: tuple[str, ...]
    last_seen_us: int


@dataclass(slots=True)
class Answer(Generic[T]):
    """Rows of a query and how many stored rows (rollup or raw) were aggregated for them."""

    rows: list[T]
    rows_read: int


class MetricsReader(Protocol):
    """The queries a series needs; a MetricsStore, or a view pinned at one commit."""

    async def counters(self, tenant_id: str, query: CounterQuery) -> Answer[CounterRow]: ...

    async def gauges(self, tenant_id: str, query: GaugeQuery) -> Answer[GaugeRow]: ...

    async def unique_users(
        self,
        tenant_id: str,
        start_us: int,
        end_us: int,
        filters: Filters,
        *,
        grain: Grain | None,
        by: str | None,
        engagement_metrics: tuple[str, ...],
    ) -> Answer[tuple[str | None, int | None, int]]:
        """Distinct user ids with engagement events, per (group of ``by``, bucket of ``grain``)."""

    async def emv_rates(self, tenant_id: str) -> dict[tuple[str, str], float]:
        """The tenant's own unit values, (platform, metric) -> value."""


class PinnedView(MetricsReader, Protocol):
    """Queries that all see the store exactly as of commit ``seq``: no later event."""

    seq: int


class MetricsStore(MetricsReader, Protocol):
    """Rollups and the queries over them; every answer equals one over the raw events."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def pinned(self) -> AbstractAsyncContextManager[PinnedView]:
        """A view of every event committed up to one commit, and of nothing after it.

        Live push takes its snapshots in one, then applies the changes of later commits.
        """

    async def counter_matrix(self, tenant_id: str, query: CounterQuery) -> CounterMatrix | None:
        """A bucketed query without ``by`` answered as arrays, when the backend has a fast
        way to; None tells the caller to use ``counters``."""

    async def trending(self, tenant_id: str, query: TrendingQuery) -> Answer[TrendingRow]:
        """One page of trending content (engagement = likes, comments, shares, saves)."""

    async def user_activity(
        self,
        tenant_id: str,
        since_us: int,
        *,
        min_engagement: float,
        engagement_metrics: tuple[str, ...],
        after: tuple[float, str] | None,
        limit: int,
    ) -> Answer[UserRow]:
        """Users by total engagement descending, then user id; ``after`` is the last row seen."""

    async def set_emv_rates(
        self, tenant_id: str, rates: dict[tuple[str, str], float | None]
    ) -> None:
        """Set unit values; None removes a tenant value (the default applies again)."""

    async def rebuild(self, progress: Callable[[int, int], None]) -> int:
        """Recompute every rollup from the raw events; ``progress(done, total)``; events read."""


# How the stores lay out a key and a stream token as a row (SQL column lists, in order).
KEY_COLUMNS = "key_id, tenant_id, key_hash, scopes, name, created_at_us, revoked_at_us, limits"
TOKEN_COLUMNS = (
    "subscription_id, tenant_id, key_id, token_hash, filter, metrics, "  # noqa: S105
    "expires_us, tail"
)


def key_values(key: ApiKey) -> list[Any]:
    """An API key as a row of KEY_COLUMNS."""
    return [
        key.key_id,
        key.tenant_id,
        key.key_hash,
        sorted(s.value for s in key.scopes),
        key.name,
        key.created_at_us,
        key.revoked_at_us,
        limits_to_json(key.limits),
    ]


def key_from_row(row: Sequence[Any]) -> ApiKey:
    """An API key from a row of KEY_COLUMNS."""
    return ApiKey(
        key_id=row[0],
        tenant_id=row[1],
        key_hash=row[2],
        scopes=frozenset(Scope(s) for s in row[3]),
        name=row[4],
        created_at_us=row[5],
        revoked_at_us=row[6],
        limits=limits_from_json(row[7]),
    )


def counter_answer(rows: Sequence[Sequence[Any]], width: int) -> Answer[CounterRow]:
    """Counter rows from rows of (``width`` dimensions, bucket, metric, total, events,
    rows read)."""
    out = [
        CounterRow(
            tuple(r[:width]),
            None if r[width] is None else int(r[width]),
            r[width + 1],
            float(r[width + 2]),
            int(r[width + 3]),
        )
        for r in rows
    ]
    return Answer(out, sum(int(r[width + 4]) for r in rows))


@dataclass(frozen=True, slots=True)
class StreamTokenRecord:
    """A stream token as stored: its hash (never the token), owner, scope and expiry.

    ``filter`` is the live filter as JSON; ``metrics`` the metric names it may read;
    ``tail`` whether it may also tail raw events (comment text included).
    """

    subscription_id: str
    tenant_id: str
    key_id: str
    token_hash: str
    filter: str
    metrics: tuple[str, ...]
    expires_us: int
    tail: bool = False

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StreamTokenRecord:
        """A token from a row of TOKEN_COLUMNS."""
        return cls(row[0], row[1], row[2], row[3], row[4], tuple(row[5]), row[6], bool(row[7]))


class TenantStore(Protocol):
    """Tenants, their API keys, their custom metrics and their stream tokens."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def create_tenant(self, tenant: Tenant) -> bool:
        """Store a tenant; False when the name is taken."""

    async def list_tenants(self) -> list[Tenant]: ...

    async def add_key(self, key: ApiKey) -> None: ...

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Keys of one tenant, or of all tenants when None, revoked ones included."""

    async def revoke_key(self, key_id: str, revoked_at_us: int) -> ApiKey | None:
        """Mark a key revoked; None when no such key exists."""

    async def add_metric(self, tenant_id: str, metric: MetricDefinition) -> bool:
        """Register a custom metric; False when the tenant already has it."""

    async def list_metrics(self) -> list[tuple[str, MetricDefinition]]:
        """Every custom metric as (tenant_id, definition)."""

    async def set_value_limits(
        self, tenant_id: str, limits: Mapping[str, ValueLimit | None]
    ) -> None:
        """Set a tenant's bounds on event values, per metric; None removes the tenant's
        bound (the default applies again). All or nothing."""

    async def list_value_limits(self) -> list[tuple[str, str, ValueLimit]]:
        """Every tenant's own bounds as (tenant_id, metric, bound), in that order."""

    async def add_stream_token(self, token: StreamTokenRecord, *, limit: int, now_us: int) -> bool:
        """Store a token unless its key already has ``limit`` unexpired ones (False then);
        expired tokens are forgotten on the way."""

    async def find_stream_token(self, token_hash: str, now_us: int) -> StreamTokenRecord | None:
        """The unexpired token of that hash."""

    async def revoke_stream_token(
        self, tenant_id: str, subscription_id: str, *, key_id: str | None = None
    ) -> StreamTokenRecord | None:
        """Forget a tenant's token (with ``key_id``, only one that key minted); None when
        there is no such token."""

    async def revoke_key_stream_tokens(self, key_id: str) -> list[str]:
        """Forget every token a key minted (its revocation); their subscription ids."""


REGISTRY_COLUMNS = "kind, entity_id, doc, keys, search, updated_us"


def registry_list_sql(
    tokens: int, *, search: bool, after: bool, param: Callable[[int], str]
) -> str:
    """The page query of ``RegistryStore.list_entities``; ``param(n)`` spells the n-th
    (1-based) placeholder. Parameters: tenant, kind, then [after], tokens, [search], limit."""
    where = [f"tenant_id = {param(1)}", f"kind = {param(2)}"]
    n = 3
    if after:
        where.append(f"entity_id > {param(n)}")
        n += 1
    for _ in range(tokens):
        where.append(f"strpos(keys, {param(n)}) > 0")
        n += 1
    if search:
        where.append(f"strpos(search, {param(n)}) > 0")
        n += 1
    clauses = " AND ".join(where)
    return (
        f"SELECT {REGISTRY_COLUMNS} FROM registry WHERE {clauses} "  # noqa: S608
        f"ORDER BY entity_id LIMIT {param(n)}"
    )


def registry_params(
    tenant_id: str,
    kind: str,
    *,
    tokens: Sequence[str],
    search: str | None,
    after: str | None,
    limit: int,
) -> list[Any]:
    out: list[Any] = [tenant_id, kind]
    if after is not None:
        out.append(after)
    out.extend(tokens)
    if search is not None:
        out.append(search)
    out.append(limit)
    return out


def registry_values(record: RegistryRecord) -> tuple[Any, ...]:
    """A record in REGISTRY_COLUMNS order."""
    return (
        record.kind,
        record.entity_id,
        record.doc,
        record.keys,
        record.search,
        record.updated_us,
    )


def record_from_row(row: Sequence[Any]) -> RegistryRecord:
    return RegistryRecord(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), int(row[5])
    )


class RegistryStore(Protocol):
    """Each tenant's influencers, campaigns and content, kept as documents
    (``registry.model``) with the strings lists filter on."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def insert_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        """Store a new entity; False (nothing changed) if one of its kind and id exists."""

    async def update_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        """Replace an entity; False if there is none of its kind and id."""

    async def get_entity(
        self, tenant_id: str, kind: str, entity_id: str
    ) -> RegistryRecord | None: ...

    async def delete_entity(self, tenant_id: str, kind: str, entity_id: str) -> bool:
        """Remove an entity; False if there was none."""

    async def list_entities(
        self,
        tenant_id: str,
        kind: str,
        *,
        tokens: Sequence[str],
        search: str | None,
        after: str | None,
        limit: int,
    ) -> list[RegistryRecord]:
        """Entities of one kind by id, after ``after``, whose ``keys`` hold every token
        and whose ``search`` holds ``search``."""

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        """Every document of one kind, of one tenant or of every tenant, as (tenant,
        record): what each process keeps in memory is loaded with it."""

    async def purge_entities(self, kind: str, updated_before_us: int, *, limit: int) -> list[str]:
        """Delete at most ``limit`` documents of one kind, of every tenant, last changed
        before ``updated_before_us``; the tenant of each one deleted."""

    async def reclaim(self) -> None:
        """After documents were written again to hide what they held (sealed): drop the
        old versions the store's files still hold, where the store can (the embedded
        store rewrites its file at the next start; PostgreSQL vacuums the table)."""


class Subscription(Protocol):
    """Messages published on one topic since subscribing, in order.

    Messages are never empty: an empty one marks a gap (the bus lost its connection,
    say), where messages may be missing; ``dropped`` counts gaps and lost messages.
    """

    # Messages lost because the subscriber fell more than ``max_pending`` behind.
    dropped: int

    async def ready(self) -> None:
        """Return once every message published from now on will be delivered here
        (a remote bus waits for its broker's confirmation)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class LiveBus(Protocol):
    """Fan-out of live messages between producers (ingest) and consumers (push)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def publish(self, topic: str, message: bytes) -> None:
        """Deliver to current subscribers of ``topic``; never blocks on a slow one."""

    def interested(self, topic: str) -> bool:
        """Whether a publish on ``topic`` may reach anyone (producers skip costly work if
        not); true whenever the topic has a subscriber."""

    async def check(self) -> None:
        """Raise StoreUnavailable unless the bus can deliver now."""

    def subscribe(self, topic: str, *, max_pending: int = 1000) -> Subscription:
        """Subscribe; a subscriber more than ``max_pending`` behind loses the oldest."""
