"""The embedded store on one DuckDB file."""

from hypemeter.backends.embedded.duckdb_store.adapters import (
    DuckDBEventStore,
    DuckDBMetricsStore,
    DuckDBTenantStore,
)
from hypemeter.backends.embedded.duckdb_store.database import DuckDBDatabase, StoreConfig

__all__ = [
    "DuckDBDatabase",
    "DuckDBEventStore",
    "DuckDBMetricsStore",
    "DuckDBTenantStore",
    "StoreConfig",
]
