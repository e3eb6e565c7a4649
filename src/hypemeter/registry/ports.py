"""The port of the registry: each tenant's influencers, campaigns and content."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hypemeter.registry.model import RegistryRecord


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
