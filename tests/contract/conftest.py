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

from hypemeter.auth.ports import TenantStore
from hypemeter.backends.cluster.postgres_database import PostgresConfig, PostgresDatabase
from hypemeter.backends.cluster.postgres_metrics import PostgresMetricsStore
from hypemeter.backends.cluster.postgres_registry import PostgresRegistryStore
from hypemeter.backends.cluster.postgres_store import PostgresEventStore, PostgresTenantStore
from hypemeter.backends.embedded.duckdb_store import (
    DuckDBDatabase,
    DuckDBEventStore,
    DuckDBMetricsStore,
    DuckDBTenantStore,
    StoreConfig,
)
from hypemeter.backends.embedded.duckdb_store.registry import DuckDBRegistryStore
from hypemeter.backends.embedded.memory_bus import MemoryLiveBus
from hypemeter.clock import FixedClock
from hypemeter.events.ports import AppendResult, EventStore
from hypemeter.live.ports import LiveBus
from hypemeter.metrics.ports import MetricsStore
from hypemeter.registry.ports import RegistryStore

NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
DEDUP_WINDOW_US = 24 * 3600 * 1_000_000


class DuckDBBackend:
    """The embedded store: one DuckDB file in a temporary directory."""

    # Appends answer exactly even for copies of events not yet committed.
    exact_in_flight = True

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

    async def open_registry_store(self) -> RegistryStore:
        """A started registry store; a second call after aclose reopens the same file."""
        db = self._database(100_000)
        store = DuckDBRegistryStore(db)
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

    exact_in_flight = True

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

    async def open_registry_store(self) -> RegistryStore:
        """A started registry store; a second call after aclose reopens the same schema."""
        db = self._database(100_000)
        store = PostgresRegistryStore(db)
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


NATS_DSN = os.environ.get("HYPEMETER_TEST_NATS", "nats://127.0.0.1:4222")
SETTLE_SECONDS = 30.0


class _HeldPublishes:
    """Stands in front of a JetStream context and holds its publishes while ``held``
    (a slow JetStream, as the stalled writer of the other backends)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.released = asyncio.Event()
        self.released.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        await self.released.wait()
        return await self._inner.publish(*args, **kwargs)


class SettledStore:
    """The EventStore an API process of the cluster profile uses (publish to JetStream),
    seen by a client that waits until the workers committed its events before going on:
    ``append`` returns what the logged store answered, once the stream is empty."""

    def __init__(self, logged: Any, backend: LoggedBackend) -> None:
        self.logged = logged
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logged, name)

    async def append(self, tenant_id: str, batch: Any) -> AppendResult:
        result: AppendResult = await self.logged.append(tenant_id, batch)
        await self._backend.settle()
        return result


class LoggedBackend(PostgresBackend):
    """The cluster profile's ingest path: appends are published to a JetStream stream of
    its own on the real NATS server, and a worker (``hypemeter.worker.Worker``, on the
    test's loop) commits them to a PostgreSQL schema of its own.

    Its answers differ from a direct store's in one documented way: a copy of an event
    that is still in the log (published, not yet committed) is answered as accepted,
    and the worker drops it (``exact_in_flight`` is False); the counts stay exact.
    """

    exact_in_flight = False

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.stream = f"HM_TEST_{uuid.uuid4().hex[:12].upper()}"
        self.log_dsn = f"{NATS_DSN}?stream={self.stream}"
        self._worker: tuple[asyncio.Task[None], asyncio.Event, Any, Any] | None = None
        self._held: list[_HeldPublishes] = []

    def _log(self) -> Any:
        from hypemeter.backends.cluster.nats_log import JetStreamLog, LogConfig

        return JetStreamLog(self.log_dsn, LogConfig(partitions=4))

    async def open_event_store(self, *, queue_limit: int = 100_000) -> EventStore:
        from hypemeter.backends.cluster.logged_store import LoggedEventStore

        await self._start_worker()
        db = self._database(queue_limit)
        log = self._log()
        logged = LoggedEventStore(log, PostgresEventStore(db), queue_limit=queue_limit)
        await logged.start()
        held = _HeldPublishes(log._js)
        log._js = held
        self._held.append(held)
        store = SettledStore(logged, self)
        self._opened.append((store, db))
        return store

    async def _start_worker(self) -> None:
        if self._worker is not None:
            return
        from hypemeter.changes.feed import ChangeFeed
        from hypemeter.events.commit import CommitStep
        from hypemeter.worker import Worker

        db = self._database(100_000)
        store = PostgresEventStore(db)
        await store.start()
        log = self._log()
        await log.start()
        stopping = asyncio.Event()
        task = asyncio.create_task(Worker(log, CommitStep(store, ChangeFeed())).run(stopping))
        self._worker = (task, stopping, log, store)
        self._opened.append((store, db))

    async def settle(self) -> None:
        """Wait until the worker has committed (and acknowledged) every message."""
        import nats

        nc = await nats.connect(NATS_DSN)
        try:
            js = nc.jetstream()
            deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
            while (await js.stream_info(self.stream)).state.messages:
                assert asyncio.get_running_loop().time() < deadline, "the worker is stuck"
                await asyncio.sleep(0.005)
        finally:
            await nc.close()

    @asynccontextmanager
    async def stalled(self, store: EventStore) -> AsyncIterator[None]:
        """Hold the store's publishes so that appends pile up in its queue."""
        held = self._held[-1]
        held.released.clear()
        try:
            yield
        finally:
            held.released.set()

    async def stored_deltas(self, store: EventStore, tenant_id: str) -> dict[str, float]:
        await self.settle()
        return await super().stored_deltas(store, tenant_id)

    async def aclose(self) -> None:
        import nats

        if self._worker is not None:
            task, stopping, log, _ = self._worker
            stopping.set()
            await asyncio.wait_for(task, SETTLE_SECONDS)
            await log.aclose()
        for store, _ in self._opened:
            if isinstance(store, SettledStore):
                await store.logged.aclose()
        await super().aclose()
        nc = await nats.connect(NATS_DSN)
        try:
            await nc.jetstream().delete_stream(self.stream)
        except nats.js.errors.NotFoundError:
            pass
        finally:
            await nc.close()


StoreBackend = DuckDBBackend | PostgresBackend
STORE_BACKENDS: list[Any] = [
    pytest.param(DuckDBBackend, id="duckdb"),
    pytest.param(PostgresBackend, id="postgresql"),
]
EVENT_STORE_BACKENDS: list[Any] = [
    *STORE_BACKENDS,
    pytest.param(LoggedBackend, id="jetstream-postgresql"),
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
async def registry_store(store_backend: StoreBackend) -> RegistryStore:
    return await store_backend.open_registry_store()


@pytest.fixture
async def metrics_store(store_backend: StoreBackend, event_store: EventStore) -> MetricsStore:
    """Reads what ``event_store`` appends: both adapters share one database."""
    return await store_backend.open_metrics_store(event_store)


@pytest.fixture
async def documents(
    store_backend: StoreBackend, event_store: EventStore
) -> AsyncIterator[RegistryStore]:
    """A registry store on the database of ``event_store``, as ``open_backends`` builds
    them (retention and erasure work on both)."""
    db = store_backend._database_of(event_store)
    store: RegistryStore = (
        DuckDBRegistryStore(db) if isinstance(db, DuckDBDatabase) else PostgresRegistryStore(db)
    )
    await store.start()
    yield store
    await store.aclose()


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
