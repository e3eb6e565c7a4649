"""The EventStore and TenantStore ports on the embedded DuckDB file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import duckdb
import pyarrow as pa

from hypemeter.auth.model import ApiKey, Tenant
from hypemeter.auth.ports import StreamTokenRecord
from hypemeter.backends.embedded.duckdb_store import queries, rollups
from hypemeter.backends.embedded.duckdb_store.cache_load import cache_tables
from hypemeter.backends.embedded.duckdb_store.database import DuckDBDatabase
from hypemeter.backends.embedded.duckdb_store.queries import Horizon
from hypemeter.backends.embedded.duckdb_store.transactions import transaction
from hypemeter.backends.sql import (
    KEY_COLUMNS,
    TOKEN_COLUMNS,
    key_from_row,
    key_values,
    token_from_row,
)
from hypemeter.errors import StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import MetricDefinition, MetricKind, ValueLimit
from hypemeter.events.ports import EXPORT_COLUMNS, AppendResult, ExpiredDay
from hypemeter.metrics.model import Grain
from hypemeter.metrics.ports import CacheLoad
from hypemeter.metrics.queries import (
    Answer,
    CounterMatrix,
    CounterQuery,
    CounterRow,
    Filters,
    GaugeQuery,
    GaugeRow,
    TrendingQuery,
    TrendingRow,
    UserRow,
)

REBUILD_CHUNK_EVENTS = 2_000_000
T = TypeVar("T")


class _SharedFile:
    """Both adapters share one DuckDBDatabase; it closes when the last one stops."""

    def __init__(self, db: DuckDBDatabase) -> None:
        self._db = db

    async def start(self) -> None:
        self._db.start()

    async def aclose(self) -> None:
        self._db.stop()


class DuckDBEventStore(_SharedFile):
    """EventStore port on the embedded DuckDB file."""

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        return await self._db.append(tenant_id, batch)

    async def count_events(self, tenant_id: str) -> int:
        def count(con: duckdb.DuckDBPyConnection) -> int:
            row = con.execute(
                "SELECT count(*) FROM events WHERE tenant_id = ?", [tenant_id]
            ).fetchall()
            return int(row[0][0]) if row else 0

        return await self._db.run(count)

    async def export(self, tenant_id: str, *, chunk_rows: int = 50_000) -> AsyncIterator[pa.Table]:
        columns = ", ".join(
            "epoch_us(ts) AS ts_us" if name == "ts_us" else name for name in EXPORT_COLUMNS
        )
        # A cursor of its own: the export reads one snapshot for as long as it takes.
        cursor = await self._db.run(lambda con: con.cursor())
        try:
            reader = await asyncio.to_thread(
                lambda: cursor.sql(
                    f"SELECT {columns} FROM events WHERE tenant_id = $tenant "  # noqa: S608
                    "ORDER BY seq, rowid",
                    params={"tenant": tenant_id},
                ).to_arrow_reader(chunk_rows)
            )
            while (chunk := await asyncio.to_thread(_next_batch, reader)) is not None:
                yield pa.Table.from_batches([chunk])
        finally:
            cursor.close()

    async def erase_influencer(self, tenant_id: str, influencer_id: str) -> int:
        return await self._db.erase_influencer(tenant_id, influencer_id)

    async def expired_days(self, cutoff_us: int) -> list[ExpiredDay]:
        return [ExpiredDay(*row) for row in await self._db.expired_days(cutoff_us)]

    async def purge_day(self, tenant_id: str, day_us: int, cutoff_us: int) -> int:
        return await self._db.purge_day(tenant_id, day_us, cutoff_us)

    async def reclaim(self) -> None:
        await self._db.reclaim()

    async def check_writable(self) -> None:
        def touch(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('ready_check', ?)", [str(time.time_ns())]
            )

        try:
            await self._db.run(touch)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"the store is not writable: {exc}") from exc

    def queue_depth(self) -> int:
        return self._db.queue_depth()

    def size_bytes(self) -> int:
        return self._db.size_bytes()


def _next_batch(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


class DuckDBTenantStore(_SharedFile):
    """TenantStore port on the embedded DuckDB file."""

    async def create_tenant(self, tenant: Tenant) -> bool:
        def insert(con: duckdb.DuckDBPyConnection) -> bool:
            rows = con.execute(
                "INSERT INTO tenants VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING tenant_id",
                [tenant.tenant_id, tenant.created_at_us],
            ).fetchall()
            return bool(rows)

        return await self._db.run(insert)

    async def list_tenants(self) -> list[Tenant]:
        def select(con: duckdb.DuckDBPyConnection) -> list[Tenant]:
            rows = con.execute("SELECT tenant_id, created_at_us FROM tenants ORDER BY 1").fetchall()
            return [Tenant(r[0], r[1]) for r in rows]

        return await self._db.run(select)

    async def add_key(self, key: ApiKey) -> None:
        def insert(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                key_values(key),
            )

        await self._db.run(insert)

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        def select(con: duckdb.DuckDBPyConnection) -> list[ApiKey]:
            sql = f"SELECT {KEY_COLUMNS} FROM api_keys"  # noqa: S608
            if tenant_id is None:
                rows = con.execute(sql + " ORDER BY created_at_us").fetchall()
            else:
                rows = con.execute(
                    sql + " WHERE tenant_id = ? ORDER BY created_at_us", [tenant_id]
                ).fetchall()
            return [key_from_row(r) for r in rows]

        return await self._db.run(select)

    async def revoke_key(self, key_id: str, revoked_at_us: int) -> ApiKey | None:
        def update(con: duckdb.DuckDBPyConnection) -> ApiKey | None:
            con.execute(
                "UPDATE api_keys SET revoked_at_us = coalesce(revoked_at_us, ?) WHERE key_id = ?",
                [revoked_at_us, key_id],
            )
            row = con.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?",  # noqa: S608
                [key_id],
            ).fetchall()
            return key_from_row(row[0]) if row else None

        return await self._db.run(update)

    async def add_metric(self, tenant_id: str, metric: MetricDefinition) -> bool:
        def insert(con: duckdb.DuckDBPyConnection) -> bool:
            rows = con.execute(
                "INSERT INTO custom_metrics VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING name",
                [tenant_id, metric.name, metric.kind.value],
            ).fetchall()
            return bool(rows)

        return await self._db.run(insert)

    async def list_metrics(self) -> list[tuple[str, MetricDefinition]]:
        def select(con: duckdb.DuckDBPyConnection) -> list[tuple[str, MetricDefinition]]:
            rows = con.execute(
                "SELECT tenant_id, name, kind FROM custom_metrics ORDER BY 1, 2"
            ).fetchall()
            return [(r[0], MetricDefinition(r[1], MetricKind(r[2]))) for r in rows]

        return await self._db.run(select)

    async def set_value_limits(
        self, tenant_id: str, limits: Mapping[str, ValueLimit | None]
    ) -> None:
        def write(con: duckdb.DuckDBPyConnection) -> None:
            with transaction(con):
                for metric, limit in limits.items():
                    con.execute(
                        "DELETE FROM value_limits WHERE tenant_id = ? AND metric = ?",
                        [tenant_id, metric],
                    )
                    if limit is not None:
                        con.execute(
                            "INSERT INTO value_limits VALUES (?, ?, ?, ?)",
                            [tenant_id, metric, limit.max_delta, limit.max_snapshot],
                        )

        await self._db.run(write)

    async def list_value_limits(self) -> list[tuple[str, str, ValueLimit]]:
        def select(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, ValueLimit]]:
            rows = con.execute(
                "SELECT tenant_id, metric, max_delta, max_snapshot FROM value_limits ORDER BY 1, 2"
            ).fetchall()
            return [(r[0], r[1], ValueLimit(float(r[2]), float(r[3]))) for r in rows]

        return await self._db.run(select)

    async def add_stream_token(self, token: StreamTokenRecord, *, limit: int, now_us: int) -> bool:
        def insert(con: duckdb.DuckDBPyConnection) -> bool:
            with transaction(con):
                con.execute("DELETE FROM stream_tokens WHERE expires_us <= ?", [now_us])
                live = con.execute(
                    "SELECT count(*) FROM stream_tokens WHERE key_id = ?", [token.key_id]
                ).fetchall()[0][0]
                if live < limit:
                    con.execute(
                        f"INSERT INTO stream_tokens ({TOKEN_COLUMNS}) "  # noqa: S608
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            token.subscription_id,
                            token.tenant_id,
                            token.key_id,
                            token.token_hash,
                            token.filter,
                            list(token.metrics),
                            token.expires_us,
                            token.tail,
                        ],
                    )
            return bool(live < limit)

        return await self._db.run(insert)

    async def find_stream_token(self, token_hash: str, now_us: int) -> StreamTokenRecord | None:
        def select(con: duckdb.DuckDBPyConnection) -> StreamTokenRecord | None:
            rows = con.execute(
                f"SELECT {TOKEN_COLUMNS} FROM stream_tokens "  # noqa: S608
                "WHERE token_hash = ? AND expires_us > ?",
                [token_hash, now_us],
            ).fetchall()
            return token_from_row(rows[0]) if rows else None

        return await self._db.read(select)

    async def revoke_stream_token(
        self, tenant_id: str, subscription_id: str, *, key_id: str | None = None
    ) -> StreamTokenRecord | None:
        def delete(con: duckdb.DuckDBPyConnection) -> StreamTokenRecord | None:
            rows = con.execute(
                "DELETE FROM stream_tokens WHERE tenant_id = ? AND subscription_id = ? "  # noqa: S608
                f"AND (? IS NULL OR key_id = ?) RETURNING {TOKEN_COLUMNS}",
                [tenant_id, subscription_id, key_id, key_id],
            ).fetchall()
            return token_from_row(rows[0]) if rows else None

        return await self._db.run(delete)

    async def revoke_key_stream_tokens(self, key_id: str) -> list[str]:
        def delete(con: duckdb.DuckDBPyConnection) -> list[str]:
            rows = con.execute(
                "DELETE FROM stream_tokens WHERE key_id = ? RETURNING subscription_id", [key_id]
            ).fetchall()
            return sorted(str(r[0]) for r in rows)

        return await self._db.run(delete)


class _Reads:
    """The read queries a series needs, each run by ``_query`` at ``_horizon()``."""

    _db: DuckDBDatabase

    async def _query(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return await self._db.read(fn)

    def _horizon(self) -> Horizon:
        return self._db.horizon()

    async def counters(self, tenant_id: str, query: CounterQuery) -> Answer[CounterRow]:
        return await self._query(
            lambda con: queries.counters(con, tenant_id, query, self._horizon())
        )

    async def gauges(self, tenant_id: str, query: GaugeQuery) -> Answer[GaugeRow]:
        return await self._query(lambda con: queries.gauges(con, tenant_id, query, self._horizon()))

    async def unique_users(
        self,
        tenant_id: str,
        start_us: int,
        end_us: int,
        filters: Filters,
        *,
        grain: Grain | None,
        by: str | None,
        engagement_metrics: tuple[str, ...],
    ) -> Answer[tuple[str | None, int | None, int]]:
        return await self._query(
            lambda con: queries.unique_users(
                con, tenant_id, start_us, end_us, filters, grain, by, engagement_metrics
            )
        )

    async def emv_rates(self, tenant_id: str) -> dict[tuple[str, str], float]:
        def select(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], float]:
            rows = con.execute(
                "SELECT platform, metric, value FROM emv_rates WHERE tenant_id = ?", [tenant_id]
            ).fetchall()
            return {(p, m): float(v) for p, m, v in rows}

        return await self._query(select)


class PinnedDuckDBView(_Reads):
    """Queries in one reader transaction whose snapshot is exactly commit ``seq``."""

    def __init__(
        self, db: DuckDBDatabase, con: duckdb.DuckDBPyConnection, seq: int, horizon: Horizon
    ) -> None:
        self._db = db
        self._con = con
        self._pinned = horizon
        self.seq = seq

    async def _query(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return await self._db.read_on(self._con, fn)

    def _horizon(self) -> Horizon:
        return self._pinned


class DuckDBMetricsStore(_Reads, _SharedFile):
    """MetricsStore port on the embedded DuckDB file: rollups folded from the raw events."""

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[PinnedDuckDBView]:
        async with self._db.pinned() as (con, seq, horizon):
            yield PinnedDuckDBView(self._db, con, seq, horizon)

    async def counter_matrix(self, tenant_id: str, query: CounterQuery) -> CounterMatrix | None:
        return None  # the query cache (metrics.cache) answers these from memory

    async def trending(self, tenant_id: str, query: TrendingQuery) -> Answer[TrendingRow]:
        return await self._query(
            lambda con: queries.trending(con, tenant_id, query, self._horizon())
        )

    async def cache_load(self, since_us: int) -> CacheLoad:
        async with self._db.pinned() as (con, seq, horizon):
            counters, engagement, tags = await self._db.read_on(
                con, lambda c: cache_tables(c, since_us, horizon.folded)
            )
        return CacheLoad(seq, counters, engagement, tags)

    def rewrites(self) -> int:
        return self._db.rewrites

    async def user_activity(
        self,
        tenant_id: str,
        since_us: int,
        *,
        min_engagement: float,
        engagement_metrics: tuple[str, ...],
        after: tuple[float, str] | None,
        limit: int,
    ) -> Answer[UserRow]:
        return await self._db.read(
            lambda con: queries.user_activity(
                con, tenant_id, since_us, min_engagement, engagement_metrics, after, limit
            )
        )

    async def set_emv_rates(
        self, tenant_id: str, rates: dict[tuple[str, str], float | None]
    ) -> None:
        def write(con: duckdb.DuckDBPyConnection) -> None:
            with transaction(con):
                for (platform, metric), value in rates.items():
                    con.execute(
                        "DELETE FROM emv_rates WHERE tenant_id = ? AND platform = ? AND metric = ?",
                        [tenant_id, platform, metric],
                    )
                    if value is not None:
                        con.execute(
                            "INSERT INTO emv_rates VALUES (?, ?, ?, ?)",
                            [tenant_id, platform, metric, value],
                        )

        await self._db.run(write)

    def folded(self) -> bool:
        """Whether every acknowledged event is folded into the rollups, without causing a fold."""
        return self._db.applied() and self._db.horizon().complete

    def wait_folded(self, timeout: float = 30.0) -> bool:
        """Block until every acknowledged event is folded into the rollups (tests, benchmarks)."""
        self._db.wait_applied()
        maintainer = self._db.maintainer
        return maintainer is None or maintainer.wait_idle(timeout)

    async def rebuild(self, progress: Callable[[int, int], None]) -> int:
        def run(con: duckdb.DuckDBPyConnection) -> int:
            # A fold committed while the rebuild runs would conflict with it on the watermark.
            with self._db.folds_paused():
                return rollups.rebuild(con, progress, chunk_events=REBUILD_CHUNK_EVENTS)

        return await self._db.run(run)
