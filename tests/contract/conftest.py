"""Backends under contract test: each port's suite runs against every entry here.

To add a backend, write a harness with the same methods as the embedded one
and append it to the matching ``*_BACKENDS`` list; the suites need no change.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pytest

from hypemeter.backends.cluster.postgres_database import PostgresConfig, PostgresDatabase
from hypemeter.backends.cluster.postgres_store import (
    PostgresEventStore,
    PostgresMetricsStore,
    PostgresTenantStore,
)
from hypemeter.backends.embedded.duckdb_store import (
    DuckDBDatabase,
    DuckDBEventStore,
    DuckDBMetricsStore,
    DuckDBTenantStore,
    StoreConfig,
)
from hypemeter.backends.embedded.memory_bus import MemoryLiveBus
from hypemeter.backends.ports import EventStore, LiveBus, MetricsStore, TenantStore
from hypemeter.clock import FixedClock

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
DEDUP_WINDOW_US = 24 * 3600 * 1_000_000


class DuckDBBackend:
    """The embedded store: one DuckDB file in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.path = root / "hypemeter.duckdb"
        self.clock = FixedClock(NOW_US)
        self._opened: list[tuple[object, DuckDBDatabase]] = []

    def _database(self, queue_limit: int) -> DuckDBDatabase:
        config = StoreConfig(
            dedup_window_us=DEDUP_WINDOW_US,
            dedup_memory_entries=1000,
            queue_limit=queue_limit,
            commit_max_events=10_000,
        )
        return DuckDBDatabase(self.path, clock=self.clock, config=config)

    async def open_event_store(self, *, queue_limit: int = 100_000) -> EventStore:
        """A started store; a second call after aclose reopens the same data."""
        db = self._database(queue_limit)
        store = DuckDBEventStore(db)
        await store.start()
        self._opened.append((store, db))
        return store

    async def open_tenant_store(self) -> TenantStore:
        db = self._database(100_000)
        store = DuckDBTenantStore(db)
        await store.start()
        self._opened.append((store, db))
        return store

    async def open_metrics_store(self, events: EventStore) -> MetricsStore:
        """A started metrics store on the database of ``events``, an opened event store,
        as ``selection.open_backends`` builds them: what one appends the other reads."""
        db = self._database_of(events)
        store = DuckDBMetricsStore(db)
        await store.start()
        self._opened.append((store, db))
        return store

    async def fold_rollups(self, store: MetricsStore) -> None:
        """Fold every committed event into the rollups now (the maintainer thread
        otherwise folds in the background, whenever it gets to it)."""
        assert isinstance(store, DuckDBMetricsStore)
        assert await asyncio.to_thread(store.wait_folded, 30.0)

    def _database_of(self, store: object) -> DuckDBDatabase:
        return next(db for opened, db in self._opened if opened is store)

    @asynccontextmanager
    async def stalled(self, store: EventStore) -> AsyncIterator[None]:
        """Hold the store's writer busy so that appends pile up in its queue."""
        db = self._database_of(store)
        release, holding = threading.Event(), threading.Event()

        def hold(_: Any) -> bool:
            holding.set()
            return release.wait(30)

        blocker = asyncio.ensure_future(db.run(hold))
        try:
            assert await asyncio.to_thread(holding.wait, 30)
            yield
        finally:
            release.set()
            assert await blocker

    async def stored_deltas(self, store: EventStore, tenant_id: str) -> dict[str, float]:
        """event_id -> stored delta of one tenant; closes ``store`` to read the file."""
        await store.aclose()
        with duckdb.connect(str(self.path), read_only=True) as con:
            rows = con.execute(
                "SELECT event_id, delta FROM events WHERE tenant_id = ?", [tenant_id]
            ).fetchall()
        return {str(event_id): float(delta) for event_id, delta in rows}

    async def aclose(self) -> None:
        for _, db in self._opened:
            db.stop()


POSTGRES_DSN = os.environ.get(
    "HYPEMETER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


class PostgresBackend:
    """The cluster store on the real PostgreSQL server, in a schema of its own per test."""

    def __init__(self, root: Path) -> None:
        del root
        self.schema = f"hm_test_{uuid.uuid4().hex[:12]}"
        self.dsn = f"{POSTGRES_DSN}?schema={self.schema}"
        self.clock = FixedClock(NOW_US)
        self._opened: list[tuple[object, PostgresDatabase]] = []

    def _database(self, queue_limit: int) -> PostgresDatabase:
        config = PostgresConfig(queue_limit=queue_limit, commit_max_events=10_000, pool_size=4)
        return PostgresDatabase(self.dsn, clock=self.clock, config=config)

    async def open_event_store(self, *, queue_limit: int = 100_000) -> EventStore:
        db = self._database(queue_limit)
        store = PostgresEventStore(db)
        await store.start()
        self._opened.append((store, db))
        return store

    async def open_tenant_store(self) -> TenantStore:
        db = self._database(100_000)
        store = PostgresTenantStore(db)
        await store.start()
        self._opened.append((store, db))
        return store

    async def open_metrics_store(self, events: EventStore) -> MetricsStore:
        """A started metrics store on the database of ``events``, an opened event store."""
        db = self._database_of(events)
        store = PostgresMetricsStore(db)
        await store.start()
        self._opened.append((store, db))
        return store

    async def fold_rollups(self, store: MetricsStore) -> None:
        """Nothing to do: the rollups change in the transaction of their events."""
        assert isinstance(store, PostgresMetricsStore)

    def _database_of(self, store: object) -> PostgresDatabase:
        return next(db for opened, db in self._opened if opened is store)

    @asynccontextmanager
    async def stalled(self, store: EventStore) -> AsyncIterator[None]:
        """Hold the store's committer so that appends pile up in its queue."""
        db = self._database_of(store)
        async with db.gate:
            yield

    async def stored_deltas(self, store: EventStore, tenant_id: str) -> dict[str, float]:
        await store.aclose()
        con = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": self.schema})
        try:
            rows = await con.fetch(
                "SELECT event_id, delta FROM events WHERE tenant_id = $1", tenant_id
            )
        finally:
            await con.close()
        return {str(r[0]): float(r[1]) for r in rows}

    async def aclose(self) -> None:
        for _, db in self._opened:
            while db.open:
                await db.stop()
        con = await asyncpg.connect(POSTGRES_DSN)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await con.close()


StoreBackend = DuckDBBackend | PostgresBackend
STORE_BACKENDS: list[Any] = [
    pytest.param(DuckDBBackend, id="duckdb"),
    pytest.param(PostgresBackend, id="postgresql"),
]
REDIS_DSN = os.environ.get("HYPEMETER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_prefix() -> str:
    """A channel prefix of its own, so that parallel runs and tests never share a channel."""
    return f"hypemeter-test:{uuid.uuid4().hex[:12]}:"


def redis_live_bus() -> LiveBus:
    """The cluster bus on the real Redis server; an unreachable one fails at ``start``."""
    from hypemeter.backends.cluster.redis_bus import RedisLiveBus

    return RedisLiveBus(REDIS_DSN, channel_prefix=redis_prefix())


BUS_BACKENDS: list[Any] = [
    pytest.param(MemoryLiveBus, id="memory"),
    pytest.param(redis_live_bus, id="redis"),
]


@pytest.fixture(params=STORE_BACKENDS)
async def store_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreBackend]:
    backend: StoreBackend = request.param(tmp_path)
    yield backend
    await backend.aclose()


@pytest.fixture
async def event_store(store_backend: StoreBackend) -> EventStore:
    return await store_backend.open_event_store()


@pytest.fixture
async def tenant_store(store_backend: StoreBackend) -> TenantStore:
    return await store_backend.open_tenant_store()


@pytest.fixture
async def metrics_store(store_backend: StoreBackend, event_store: EventStore) -> MetricsStore:
    """Reads what ``event_store`` appends: both adapters share one database."""
    return await store_backend.open_metrics_store(event_store)


@pytest.fixture(params=BUS_BACKENDS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[LiveBus]:
    factory: Callable[[], LiveBus] = request.param
    started = factory()
    await started.start()
    yield started
    await started.aclose()


@pytest.fixture
def redis_dsn() -> str:
    return REDIS_DSN


@pytest.fixture
def redis_channel_prefix() -> str:
    return redis_prefix()
