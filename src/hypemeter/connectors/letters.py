"""The connectors' dead letters as retention and erasure reach them.

The privacy capability purges dead letters past their TTL and erases those that name
an erased influencer (``privacy.service``). The letters' kind and stored form are the
connectors' own (``connectors.model``): this archive is what ``app.py`` hands the
privacy service for them (its port ``privacy.ports.DeadLetters``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypemeter.connectors.model import DEAD_LETTER, letter_of
from hypemeter.connectors.ports import ConnectorDocuments
from hypemeter.registry.model import RegistryRecord


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter as stored, decoded only when its body is asked for: bodies reach
    megabytes, so a caller decodes them off the event loop."""

    record: RegistryRecord

    @property
    def letter_id(self) -> str:
        return self.record.entity_id

    def body(self) -> bytes:
        """The delivery's raw body, as the platform sent it."""
        return letter_of(self.record).body()


class DeadLetterArchive:
    """Every tenant's dead letters in the connectors' document store. Every method
    raises what the store raises (StoreUnavailable...)."""

    def __init__(self, store: ConnectorDocuments) -> None:
        self._store = store

    async def purge_letters(self, changed_before_us: int, *, limit: int) -> list[str]:
        """Delete at most ``limit`` dead letters, of every tenant, received or last
        replayed before ``changed_before_us``; the tenant of each one deleted."""
        return await self._store.purge_entities(DEAD_LETTER, changed_before_us, limit=limit)

    async def letters(self, tenant_id: str, *, after: str | None, limit: int) -> list[StoredLetter]:
        """The tenant's dead letters by id, after ``after``, at most ``limit``."""
        records = await self._store.list_entities(
            tenant_id, DEAD_LETTER, tokens=(), search=None, after=after, limit=limit
        )
        return [StoredLetter(record) for record in records]

    async def delete_letter(self, tenant_id: str, letter_id: str) -> bool:
        """Remove one dead letter; False if there was none."""
        return await self._store.delete_entity(tenant_id, DEAD_LETTER, letter_id)
