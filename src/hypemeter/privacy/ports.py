"""The ports of retention and erasure: the parts of the stores a purge or an erasure uses.

``app.py`` hands the privacy service the event store and the document store (sealed);
these Protocols name what it needs of them, so privacy depends on the stores' shape,
not on the events' or the registry's ports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hypemeter.registry.model import RegistryRecord


class ExpiringDay(Protocol):
    """A UTC day of one tenant with events past the retention: what one purge step takes."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def day_us(self) -> int: ...


class RetainedEvents(Protocol):
    """The stored events, as retention and erasure delete them. Every method raises what
    the store raises (StoreUnavailable...)."""

    async def expired_days(self, cutoff_us: int) -> Sequence[ExpiringDay]:
        """The (tenant, UTC day) pairs before ``cutoff_us`` (a day boundary) holding events
        a purge deletes, oldest first."""

    async def purge_day(self, tenant_id: str, day_us: int, cutoff_us: int) -> int:
        """Delete the tenant's events of one UTC day before ``cutoff_us`` (but the kept
        readings) with their rollups, in one short step; how many events were deleted."""

    async def erase_influencer(self, tenant_id: str, influencer_id: str) -> int:
        """Delete one influencer's events and everything derived from them, atomically;
        how many events were erased."""

    async def reclaim(self) -> None:
        """After an erasure: drop the copies of deleted rows the store's files still hold."""


class LetterDocuments(Protocol):
    """The document store holding the connectors' dead letters."""

    async def purge_entities(self, kind: str, updated_before_us: int, *, limit: int) -> list[str]:
        """Delete at most ``limit`` documents of one kind, of every tenant, last changed
        before ``updated_before_us``; the tenant of each one deleted."""

    async def delete_entity(self, tenant_id: str, kind: str, entity_id: str) -> bool:
        """Remove a document; False if there was none."""

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
        """Documents of one kind by id, after ``after``, whose ``keys`` hold every token
        and whose ``search`` holds ``search``."""
