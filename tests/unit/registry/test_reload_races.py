"""RegistryService and ConnectorService keep what they hold in memory in step with
their store, whatever the interleaving of a reload (another process's notice) and a
change made here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from hypemeter.clock import FixedClock
from hypemeter.connectors.model import CONNECTOR
from hypemeter.connectors.service import ConnectorService
from hypemeter.errors import NotFound
from hypemeter.registry.model import Content, Influencer, Kind, RegistryRecord
from hypemeter.registry.service import RegistryService

TENANT = "acme"


class GatedStore:
    """A registry store in a dict; a reload (every tenant's entities) can be held once
    it has read the entities of ``held_kind``, before it has built anything from them."""

    def __init__(self, held_kind: str = Kind.CONTENT.value) -> None:
        self.records: dict[tuple[str, str, str], RegistryRecord] = {}
        self.held_kind = held_kind
        self.hold = False
        self.reload_reading = asyncio.Event()
        self.let_go = asyncio.Event()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def insert_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        key = (tenant_id, record.kind, record.entity_id)
        if key in self.records:
            return False
        self.records[key] = record
        return True

    async def update_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        key = (tenant_id, record.kind, record.entity_id)
        if key not in self.records:
            return False
        self.records[key] = record
        return True

    async def get_entity(self, tenant_id: str, kind: str, entity_id: str) -> RegistryRecord | None:
        return self.records.get((tenant_id, kind, entity_id))

    async def delete_entity(self, tenant_id: str, kind: str, entity_id: str) -> bool:
        return self.records.pop((tenant_id, kind, entity_id), None) is not None

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
        raise NotImplementedError  # not used here

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        found = [
            (tenant, record)
            for (tenant, record_kind, _), record in list(self.records.items())
            if record_kind == kind and tenant_id in (None, tenant)
        ]
        if tenant_id is None and kind == self.held_kind and self.hold:
            # What this reload read is from before the change the test makes next.
            self.hold = False
            self.reload_reading.set()
            await self.let_go.wait()
        return found


async def test_a_reload_that_read_before_a_delete_does_not_bring_the_content_back() -> None:
    store = GatedStore()
    registry = RegistryService(store, FixedClock(1_700_000_000_000_000))
    await registry.start()
    await registry.create(TENANT, Influencer(id="inf-ana", name="Ana"))
    await registry.create(TENANT, Content(id="post-1", platform="tiktok", influencer_id="inf-ana"))
    directory = registry.directory(TENANT)
    assert directory is not None and directory.content == {"post-1": ("inf-ana", None)}

    store.hold = True
    reload = asyncio.create_task(registry.reload())
    await store.reload_reading.wait()
    delete = asyncio.create_task(registry.delete(TENANT, Kind.CONTENT, "post-1", erase=False))
    await asyncio.sleep(0.01)  # the delete runs as far as it can while the reload reads
    store.let_go.set()
    await asyncio.gather(reload, delete)

    assert registry.directory(TENANT) is None  # no content, no accounts: an empty registry
    await registry.reload()
    assert registry.directory(TENANT) is None


async def test_a_reload_that_read_before_a_delete_does_not_bring_the_connector_back() -> None:
    store = GatedStore(held_kind=CONNECTOR)
    # At time 0 an unknown connector id is not looked up again in the store (that
    # happens at most once a second): require() answers from memory alone.
    connectors = ConnectorService(store, None, None, FixedClock(0))  # type: ignore[arg-type]
    await connectors.start()
    made = await connectors.create(TENANT, "tiktok", {"client_secret": "s"})
    assert (await connectors.require("tiktok", made.id))[0] == TENANT

    store.hold = True
    reload = asyncio.create_task(connectors.reload())
    await store.reload_reading.wait()
    delete = asyncio.create_task(connectors.delete(TENANT, made.id))
    await asyncio.sleep(0.01)
    store.let_go.set()
    await asyncio.gather(reload, delete)

    with pytest.raises(NotFound):
        await connectors.require("tiktok", made.id)
