"""Pick backends by DSN scheme; drivers are imported only when chosen."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from hypemeter.auth.audit import AuditStore
from hypemeter.auth.ports import TenantStore
from hypemeter.clock import Clock
from hypemeter.errors import InvalidInput
from hypemeter.events.ports import EventStore
from hypemeter.live.ports import LiveBus
from hypemeter.metrics.ports import MetricsStore
from hypemeter.registry.ports import RegistryStore
from hypemeter.settings import Settings

if TYPE_CHECKING:
    from hypemeter.backends.cluster.logged_store import LoggedEventStore
    from hypemeter.backends.cluster.nats_log import JetStreamLog


Check = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backends:
    store: EventStore
    tenants: TenantStore
    metrics: MetricsStore
    bus: LiveBus
    registry: RegistryStore
    audit: AuditStore
    # Whether ``store`` commits (False: it appends to the event log, and workers commit).
    commits: bool = True
    # Whether the bus stays inside this process (memory://).
    local_bus: bool = True
    # Readiness, per backend: each raises StoreUnavailable when its backend cannot serve.
    checks: dict[str, Check] = field(default_factory=dict)


def duckdb_path(dsn: str) -> Path:
    parsed = urlparse(dsn)
    path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
    if path.startswith("//"):  # duckdb:////abs/path
        path = "/" + path.lstrip("/")
    if not path:
        raise InvalidInput(f"store DSN {dsn!r} names no file", field="store")
    return Path(path)


def open_backends(
    settings: Settings, clock: Clock, *, admin_only: bool = False, direct: bool = False
) -> Backends:
    """Build (not start) the backends the settings name.

    ``admin_only`` skips what only ingest needs (the dedup index, the event log), for
    CLI commands. ``direct`` appends to the store even when an event log is set: the
    worker, which moves events from the log into the store.
    """
    check_profile(settings)
    store, tenants, metrics, registry, audit = _open_store(settings, clock, admin_only=admin_only)
    bus = open_bus(settings.bus)
    checks: dict[str, Check] = {"store": store.check_writable, "bus": bus.check}
    commits = True
    if settings.log and not admin_only and not direct:
        logged = _open_log(settings, store)
        checks["log"] = logged.check_log
        store, commits = logged, False
    return Backends(
        store,
        tenants,
        metrics,
        bus=bus,
        registry=registry,
        audit=audit,
        commits=commits,
        local_bus=urlparse(settings.bus).scheme == "memory",
        checks=checks,
    )


def check_profile(settings: Settings) -> None:
    """The cluster profile runs on PostgreSQL, NATS JetStream and Redis, and nothing else."""
    if settings.profile != "cluster":
        return
    wanted = (
        ("store", settings.store, ("postgresql", "postgres"), "postgresql://host/db"),
        ("log", settings.log, ("nats",), "nats://host:4222"),
        ("bus", settings.bus, ("redis", "rediss"), "redis://host:6379/0"),
    )
    for name, dsn, schemes, example in wanted:
        if urlparse(dsn).scheme not in schemes:
            raise InvalidInput(
                f"the cluster profile needs HYPEMETER_{name.upper()}={example} "
                f"(got {dsn or 'nothing'!r})",
                field=name,
            )


def _open_log(settings: Settings, store: EventStore) -> LoggedEventStore:
    if urlparse(settings.log).scheme != "nats":
        raise InvalidInput(
            f"unsupported log DSN {settings.log!r}; this build supports nats://host:port",
            field="log",
        )
    try:
        from hypemeter.backends.cluster.logged_store import LoggedEventStore
    except ImportError as exc:
        raise InvalidInput(
            f"the event log needs its driver ({exc.name}): pip install 'hypemeter[cluster]'",
            field="log",
        ) from exc
    from hypemeter.backends.cluster.postgres_store import PostgresEventStore

    if not isinstance(store, PostgresEventStore):
        raise InvalidInput(
            "the event log feeds a PostgreSQL store: set HYPEMETER_STORE=postgresql://host/db",
            field="log",
        )
    limit = max(settings.ingest_queue_events, settings.max_events_per_request)
    return LoggedEventStore(open_log(settings), store, queue_limit=limit)


def open_log(settings: Settings) -> JetStreamLog:
    """The event log the settings name (the cluster extra must be installed)."""
    from hypemeter.backends.cluster.nats_log import JetStreamLog, LogConfig

    config = LogConfig(
        partitions=settings.log_partitions,
        duplicate_window_seconds=settings.log_duplicate_window_seconds,
        ack_wait_seconds=settings.log_ack_wait_seconds,
    )
    return JetStreamLog(settings.log, config)


Stores = tuple[EventStore, TenantStore, MetricsStore, RegistryStore, AuditStore]


def _open_store(settings: Settings, clock: Clock, *, admin_only: bool) -> Stores:
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
        from hypemeter.backends.embedded.duckdb_store.audit import DuckDBAuditStore
        from hypemeter.backends.embedded.duckdb_store.registry import DuckDBRegistryStore

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
        db = DuckDBDatabase(duckdb_path(dsn), clock=clock, config=config, data_dir=settings.data)
        return (
            DuckDBEventStore(db),
            DuckDBTenantStore(db),
            DuckDBMetricsStore(db),
            DuckDBRegistryStore(db),
            DuckDBAuditStore(db),
        )
    if scheme in {"postgresql", "postgres"}:
        return _open_postgres(settings, clock, dsn)
    raise InvalidInput(
        f"unsupported store DSN scheme {scheme!r}; this build supports duckdb:///path "
        "and postgresql://host/db",
        field="store",
    )


def _open_postgres(settings: Settings, clock: Clock, dsn: str) -> Stores:
    try:
        from hypemeter.backends.cluster.postgres_audit import PostgresAuditStore
        from hypemeter.backends.cluster.postgres_database import PostgresConfig, PostgresDatabase
        from hypemeter.backends.cluster.postgres_metrics import PostgresMetricsStore
        from hypemeter.backends.cluster.postgres_registry import PostgresRegistryStore
        from hypemeter.backends.cluster.postgres_store import (
            PostgresEventStore,
            PostgresTenantStore,
        )
    except ImportError as exc:
        raise InvalidInput(
            f"the PostgreSQL store needs its driver ({exc.name}): pip install 'hypemeter[cluster]'",
            field="store",
        ) from exc
    config = PostgresConfig(
        queue_limit=max(settings.ingest_queue_events, settings.max_events_per_request),
        commit_max_events=settings.commit_max_events,
        pool_size=settings.query_threads + 2,
    )
    db = PostgresDatabase(dsn, clock=clock, config=config)
    return (
        PostgresEventStore(db),
        PostgresTenantStore(db),
        PostgresMetricsStore(db),
        PostgresRegistryStore(db),
        PostgresAuditStore(db),
    )


def open_bus(dsn: str) -> LiveBus:
    scheme = urlparse(dsn).scheme
    if scheme == "memory":
        from hypemeter.backends.embedded.memory_bus import MemoryLiveBus

        return MemoryLiveBus()
    if scheme in ("redis", "rediss"):
        try:
            from hypemeter.backends.cluster.redis_bus import RedisLiveBus
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "redis":
                raise
            raise InvalidInput(
                f"bus DSN {scheme}:// needs the Redis driver: pip install 'hypemeter[cluster]'",
                field="bus",
            ) from exc
        return RedisLiveBus(dsn)
    raise InvalidInput(
        f"unsupported bus DSN scheme {scheme!r}; this build supports memory://, "
        "redis://host:port/db and rediss://host:port/db",
        field="bus",
    )
