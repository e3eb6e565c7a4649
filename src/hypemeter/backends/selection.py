"""Pick backends by DSN scheme; drivers are imported only when chosen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from hypemeter.backends.ports import EventStore, LiveBus, MetricsStore, TenantStore
from hypemeter.clock import Clock
from hypemeter.errors import InvalidInput
from hypemeter.settings import Settings


@dataclass(frozen=True, slots=True)
class Backends:
    store: EventStore
    tenants: TenantStore
    metrics: MetricsStore
    bus: LiveBus


def duckdb_path(dsn: str) -> Path:
    parsed = urlparse(dsn)
    path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
    if path.startswith("//"):  # duckdb:////abs/path
        path = "/" + path.lstrip("/")
    if not path:
        raise InvalidInput(f"store DSN {dsn!r} names no file", field="store")
    return Path(path)


def open_backends(settings: Settings, clock: Clock, *, admin_only: bool = False) -> Backends:
    """Build (not start) the backends the settings name.

    ``admin_only`` skips what only ingest needs (the dedup index), for CLI commands.
    """
    return Backends(
        *_open_store(settings, clock, admin_only=admin_only),
        bus=_open_bus(settings.bus),
    )


def _open_store(
    settings: Settings, clock: Clock, *, admin_only: bool
) -> tuple[EventStore, TenantStore, MetricsStore]:
    dsn = settings.store_dsn()
    scheme = urlparse(dsn).scheme
    if scheme == "duckdb":
        from hypemeter.backends.embedded.duckdb_store import (
            DuckDBDatabase,
            DuckDBEventStore,
            DuckDBMetricsStore,
            DuckDBTenantStore,
            StoreConfig,
        )

        config = StoreConfig(
            dedup_window_us=settings.dedup_window_seconds * 1_000_000,
            dedup_memory_entries=settings.dedup_memory_entries,
            queue_limit=max(settings.ingest_queue_events, settings.max_events_per_request),
            commit_max_events=settings.commit_max_events,
            restore_dedup=not admin_only,
            maintain_rollups=not admin_only,
            query_threads=settings.query_threads,
            fold_interval=settings.rollup_fold_interval,
        )
        db = DuckDBDatabase(duckdb_path(dsn), clock=clock, config=config)
        return DuckDBEventStore(db), DuckDBTenantStore(db), DuckDBMetricsStore(db)
    raise InvalidInput(
        f"unsupported store DSN scheme {scheme!r}; this build supports duckdb:///path",
        field="store",
    )


def _open_bus(dsn: str) -> LiveBus:
    scheme = urlparse(dsn).scheme
    if scheme == "memory":
        from hypemeter.backends.embedded.memory_bus import MemoryLiveBus

        return MemoryLiveBus()
    raise InvalidInput(
        f"unsupported bus DSN scheme {scheme!r}; this build supports memory://", field="bus"
    )
