"""The port of the connectors: where their documents (connectors, dead letters) are kept.

Connectors keep their documents in the same document store as the registry, as
``RegistryRecord`` of their own kinds (``connectors.model``); ``app.py`` hands them
that store (sealed: secrets encrypted at rest). This Protocol names the part of it
the connectors use, so they depend on the store's shape, not on the registry's port.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hypemeter.registry.model import RegistryRecord


class ConnectorDocuments(Protocol):
    """Each tenant's connector documents, by kind and id. Every method raises what the
    store raises (StoreUnavailable...)."""

    async def insert_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        """Store a new document; False (nothing changed) if one of its kind and id exists."""

    async def update_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        """Replace a document; False if there is none of its kind and id."""

    async def get_entity(
        self, tenant_id: str, kind: str, entity_id: str
    ) -> RegistryRecord | None: ...

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

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        """Every document of one kind, of one tenant or of every tenant, as (tenant,
        record): what each process keeps in memory is loaded with it."""

    async def purge_entities(self, kind: str, updated_before_us: int, *, limit: int) -> list[str]:
        """Delete at most ``limit`` documents of one kind, of every tenant, last changed
        before ``updated_before_us``; the tenant of each one deleted."""
