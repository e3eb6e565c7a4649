"""The ports: small async Protocols each backend implements.

Every port has an explicit lifecycle: ``start`` before first use, ``aclose``
at shutdown. The embedded backends (DuckDB, in-memory bus) and the cluster
ones implement the same Protocols and pass the same contract tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from hypemeter.auth.model import ApiKey, Tenant
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import MetricDefinition


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What a durable append did with one batch."""

    accepted: int
    duplicates: int
    seq: int


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

    async def check_writable(self) -> None:
        """Raise StoreUnavailable unless a write can commit now."""

    def queue_depth(self) -> int:
        """Events accepted for writing but not yet committed."""

    def size_bytes(self) -> int:
        """Bytes the store occupies on disk, or 0 when unknown."""


class TenantStore(Protocol):
    """Tenants, their API keys and their custom metrics."""

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


class Subscription(Protocol):
    """Messages published on one topic since subscribing, in order."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class LiveBus(Protocol):
    """Fan-out of live messages between producers (ingest) and consumers (push)."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def publish(self, topic: str, message: bytes) -> None:
        """Deliver to current subscribers of ``topic``; never blocks on a slow one."""

    def subscribe(self, topic: str, *, max_pending: int = 1000) -> Subscription:
        """Subscribe; a subscriber more than ``max_pending`` behind loses the oldest."""
