"""RegistryService and ConnectorService keep what they hold in memory in step with
their store, whatever the interleaving of a reload (another process's notice) and a
change made here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hypemeter.backends.embedded.duckdb_store.database import DuckDBDatabase, StoreConfig
from hypemeter.backends.embedded.duckdb_store.registry import DuckDBRegistryStore
from hypemeter.clock import FixedClock
from hypemeter.connectors.model import CONNECTOR
from hypemeter.connectors.service import ConnectorService
from hypemeter.errors import NotFound
from hypemeter.metrics.model import DAY_US
from hypemeter.registry.model import Content, Influencer, Kind, RegistryRecord
from hypemeter.registry.service import RegistryService

TENANT = "acme"
NOW_US = 1_700_000_000_000_000


class GatedStore(DuckDBRegistryStore):
    """The embedded registry store; a reload (every tenant's entities) can be held once
    it has read the entities of ``held_kind``, before it has built anything from them."""

    def __init__(self, path: Path, held_kind: str) -> None:
        config = StoreConfig(
            dedup_window_us=DAY_US,
            dedup_memory_entries=1000,
            queue_limit=10_000,
            commit_max_events=10_000,
            maintain_rollups=False,
        )
        super().__init__(DuckDBDatabase(path, clock=FixedClock(NOW_US), config=config))
        self.held_kind = held_kind
        self.hold = False
        self.reload_reading = asyncio.Event()
        self.let_go = asyncio.Event()

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        found = await super().all_entities(kind, tenant_id)
        if tenant_id is None and kind == self.held_kind and self.hold:
            # What this reload read is from before the change the test makes next.
            self.hold = False
            self.reload_reading.set()
            await self.let_go.wait()
        return found


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[GatedStore]]]:
    opened: list[GatedStore] = []

    async def open_store(held_kind: str) -> GatedStore:
        store = GatedStore(tmp_path / f"{held_kind}.duckdb", held_kind)
        await store.start()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.aclose()


async def test_a_reload_that_read_before_a_delete_does_not_bring_the_content_back(
    gated: Callable[[str], Awaitable[GatedStore]],
) -> None:
    store = await gated(Kind.CONTENT.value)
    registry = RegistryService(store, FixedClock(NOW_US))
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


async def test_a_reload_that_read_before_a_delete_does_not_bring_the_connector_back(
    gated: Callable[[str], Awaitable[GatedStore]],
) -> None:
    store = await gated(CONNECTOR)
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
