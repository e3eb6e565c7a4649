"""The EventStore, TenantStore and MetricsStore ports on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg
import pyarrow as pa

from hypemeter.auth.model import ApiKey, Tenant
from hypemeter.auth.ports import StreamTokenRecord
from hypemeter.backends.cluster import postgres_queries as queries
from hypemeter.backends.cluster import postgres_retention as retention
from hypemeter.backends.cluster.postgres_database import PostgresDatabase
from hypemeter.backends.cluster.postgres_erasure import erase_influencer
from hypemeter.backends.cluster.postgres_schema import ROLLUP_TABLES
from hypemeter.backends.cluster.rollup_sql import rollup_statements
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

T = TypeVar("T")
_EXPORT_TYPES = {"value": pa.float64(), "ts_us": pa.int64(), "tags": pa.list_(pa.string())}
Query = Callable[[asyncpg.Connection], Awaitable[T]]


class _Shared:
    """The adapters share one PostgresDatabase; it closes when the last one stops."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def start(self) -> None:
        await self._db.start()

    async def aclose(self) -> None:
        await self._db.stop()


class PostgresEventStore(_Shared):
    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        return await self._db.append(tenant_id, batch)

    async def known_ids(self, tenant_id: str, event_ids: list[str]) -> set[str]:
        """Which of these event ids the tenant already has stored."""
        if not event_ids:
            return set()
        rows = await self._db.run(
            lambda con: con.fetch(
                "SELECT event_id FROM event_ids "
                "WHERE tenant_id = $1 AND event_id = ANY($2::text[])",
                tenant_id,
                event_ids,
            )
        )
        return {r[0] for r in rows}

    async def export(self, tenant_id: str, *, chunk_rows: int = 50_000) -> AsyncIterator[pa.Table]:
        sql = (
            f"SELECT {', '.join(EXPORT_COLUMNS)} FROM events "  # noqa: S608
            "WHERE tenant_id = $1 ORDER BY n"
        )
        async with self._db.pool().acquire() as con, con.transaction(readonly=True):
            cursor = await con.cursor(sql, tenant_id)
            while rows := await cursor.fetch(chunk_rows):
                columns = list(zip(*rows, strict=True))
                yield pa.table(
                    {
                        name: pa.array(values, _EXPORT_TYPES.get(name, pa.string()))
                        for name, values in zip(EXPORT_COLUMNS, columns, strict=True)
                    }
                )

    async def count_events(self, tenant_id: str) -> int:
        return int(
            await self._db.run(
                lambda con: con.fetchval(
                    "SELECT count(*) FROM events WHERE tenant_id = $1", tenant_id
                )
            )
        )

    async def erase_influencer(self, tenant_id: str, influencer_id: str) -> int:
        return await self._db.run_retrying(
            lambda con: erase_influencer(con, tenant_id, influencer_id)
        )

    async def expired_days(self, cutoff_us: int) -> list[ExpiredDay]:
        rows = await self._db.run(lambda con: retention.expired_days(con, cutoff_us))
        return [ExpiredDay(*row) for row in rows]

    async def purge_day(self, tenant_id: str, day_us: int, cutoff_us: int) -> int:
        return await self._db.run_retrying(
            lambda con: retention.purge_day(con, tenant_id, day_us, cutoff_us)
        )

    async def reclaim(self) -> None:
        # Marks the dead rows' space free; their bytes stay on disk (and in the WAL
        # and any backup) until PostgreSQL writes over them.
        tables = ", ".join(("events", "event_ids", "snapshot_state", "registry", *ROLLUP_TABLES))
        await self._db.run(lambda con: con.execute(f"VACUUM {tables}"))

    async def check_writable(self) -> None:
        try:
            await self._db.run(
                lambda con: con.execute(
                    "INSERT INTO hm_meta VALUES ('ready_check', $1) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    str(time.time_ns()),
                )
            )
        except StoreUnavailable:
            raise
        except asyncpg.PostgresError as exc:
            raise StoreUnavailable(f"the store is not writable: {exc}") from exc

    def queue_depth(self) -> int:
        return self._db.queue_depth()

    def size_bytes(self) -> int:
        return self._db.size_bytes()


_REVOKE = (
    "UPDATE api_keys SET revoked_at_us = coalesce(revoked_at_us, $1) "  # noqa: S608
    f"WHERE key_id = $2 RETURNING {KEY_COLUMNS}"
)


class PostgresTenantStore(_Shared):
    async def create_tenant(self, tenant: Tenant) -> bool:
        row = await self._db.run(
            lambda con: con.fetchval(
                "INSERT INTO tenants VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING tenant_id",
                tenant.tenant_id,
                tenant.created_at_us,
            )
        )
        return row is not None

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._db.run(
            lambda con: con.fetch("SELECT tenant_id, created_at_us FROM tenants ORDER BY 1")
        )
        return [Tenant(r[0], r[1]) for r in rows]

    async def add_key(self, key: ApiKey) -> None:
        await self._db.run(
            lambda con: con.execute(
                f"INSERT INTO api_keys ({KEY_COLUMNS}) "  # noqa: S608
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                *key_values(key),
            )
        )

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        sql = f"SELECT {KEY_COLUMNS} FROM api_keys"  # noqa: S608
        if tenant_id is None:
            rows = await self._db.run(lambda con: con.fetch(sql + " ORDER BY created_at_us"))
        else:
            rows = await self._db.run(
                lambda con: con.fetch(
                    sql + " WHERE tenant_id = $1 ORDER BY created_at_us", tenant_id
                )
            )
        return [key_from_row(r) for r in rows]

    async def revoke_key(self, key_id: str, revoked_at_us: int) -> ApiKey | None:
        row = await self._db.run(
            lambda con: con.fetchrow(
                _REVOKE,
                revoked_at_us,
                key_id,
            )
        )
        return None if row is None else key_from_row(row)

    async def add_metric(self, tenant_id: str, metric: MetricDefinition) -> bool:
        row = await self._db.run(
            lambda con: con.fetchval(
                "INSERT INTO custom_metrics VALUES ($1, $2, $3) ON CONFLICT DO NOTHING "
                "RETURNING name",
                tenant_id,
                metric.name,
                metric.kind.value,
            )
        )
        return row is not None

    async def list_metrics(self) -> list[tuple[str, MetricDefinition]]:
        rows = await self._db.run(
            lambda con: con.fetch("SELECT tenant_id, name, kind FROM custom_metrics ORDER BY 1, 2")
        )
        return [(r[0], MetricDefinition(r[1], MetricKind(r[2]))) for r in rows]

    async def set_value_limits(
        self, tenant_id: str, limits: Mapping[str, ValueLimit | None]
    ) -> None:
        async def write(con: asyncpg.Connection) -> None:
            async with con.transaction():
                for metric, limit in limits.items():
                    if limit is None:
                        await con.execute(
                            "DELETE FROM value_limits WHERE tenant_id = $1 AND metric = $2",
                            tenant_id,
                            metric,
                        )
                        continue
                    await con.execute(
                        "INSERT INTO value_limits VALUES ($1, $2, $3, $4) "
                        "ON CONFLICT (tenant_id, metric) DO UPDATE SET "
                        "max_delta = excluded.max_delta, max_snapshot = excluded.max_snapshot",
                        tenant_id,
                        metric,
                        limit.max_delta,
                        limit.max_snapshot,
                    )

        await self._db.run(write)

    async def list_value_limits(self) -> list[tuple[str, str, ValueLimit]]:
        rows = await self._db.run(
            lambda con: con.fetch(
                "SELECT tenant_id, metric, max_delta, max_snapshot FROM value_limits ORDER BY 1, 2"
            )
        )
        return [(r[0], r[1], ValueLimit(float(r[2]), float(r[3]))) for r in rows]

    async def add_stream_token(self, token: StreamTokenRecord, *, limit: int, now_us: int) -> bool:
        async def insert(con: asyncpg.Connection) -> bool:
            async with con.transaction():
                # One issuer per key at a time, so that the count holds across processes.
                await con.execute("SELECT pg_advisory_xact_lock(hashtext($1))", token.key_id)
                await con.execute("DELETE FROM stream_tokens WHERE expires_us <= $1", now_us)
                live = await con.fetchval(
                    "SELECT count(*) FROM stream_tokens WHERE key_id = $1", token.key_id
                )
                if live >= limit:
                    return False
                await con.execute(
                    f"INSERT INTO stream_tokens ({TOKEN_COLUMNS}) "  # noqa: S608
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    token.subscription_id,
                    token.tenant_id,
                    token.key_id,
                    token.token_hash,
                    token.filter,
                    list(token.metrics),
                    token.expires_us,
                    token.tail,
                )
                return True

        return bool(await self._db.run(insert))

    async def find_stream_token(self, token_hash: str, now_us: int) -> StreamTokenRecord | None:
        row = await self._db.run(
            lambda con: con.fetchrow(
                f"SELECT {TOKEN_COLUMNS} FROM stream_tokens "  # noqa: S608
                "WHERE token_hash = $1 AND expires_us > $2",
                token_hash,
                now_us,
            )
        )
        return None if row is None else token_from_row(row)

    async def revoke_stream_token(
        self, tenant_id: str, subscription_id: str, *, key_id: str | None = None
    ) -> StreamTokenRecord | None:
        row = await self._db.run(
            lambda con: con.fetchrow(
                "DELETE FROM stream_tokens WHERE tenant_id = $1 AND subscription_id = $2 "  # noqa: S608
                f"AND ($3::text IS NULL OR key_id = $3) RETURNING {TOKEN_COLUMNS}",
                tenant_id,
                subscription_id,
                key_id,
            )
        )
        return None if row is None else token_from_row(row)

    async def revoke_key_stream_tokens(self, key_id: str) -> list[str]:
        rows = await self._db.run(
            lambda con: con.fetch(
                "DELETE FROM stream_tokens WHERE key_id = $1 RETURNING subscription_id", key_id
            )
        )
        return sorted(str(r[0]) for r in rows)


class _Reads:
    """The queries a series needs, each run by ``_query``."""

    async def _query(self, fn: Query[T]) -> T:
        raise NotImplementedError

    async def counters(self, tenant_id: str, query: CounterQuery) -> Answer[CounterRow]:
        return await self._query(lambda con: queries.counters(con, tenant_id, query))

    async def gauges(self, tenant_id: str, query: GaugeQuery) -> Answer[GaugeRow]:
        return await self._query(lambda con: queries.gauges(con, tenant_id, query))

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
        rows = await self._query(
            lambda con: con.fetch(
                "SELECT platform, metric, value FROM emv_rates WHERE tenant_id = $1", tenant_id
            )
        )
        return {(r[0], r[1]): float(r[2]) for r in rows}


class PinnedPostgresView(_Reads):
    """Queries in one repeatable-read transaction that sees exactly commits 1..seq."""

    def __init__(self, con: asyncpg.Connection, seq: int) -> None:
        self._con = con
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self.seq = seq

    async def _query(self, fn: Query[T]) -> T:
        async with self._lock:
            return await fn(self._con)


class PostgresMetricsStore(_Reads, _Shared):
    """Rollups kept in the transaction of their events, and the queries over them."""

    async def _query(self, fn: Query[T]) -> T:
        return await self._db.run(fn)

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[PinnedPostgresView]:
        async with self._db.pinned() as (con, seq):
            yield PinnedPostgresView(con, seq)

    async def counter_matrix(self, tenant_id: str, query: CounterQuery) -> CounterMatrix | None:
        return None

    def folded(self) -> bool:
        """Always: rollups change in the transaction of their events."""
        return True

    def wait_folded(self, timeout: float = 30.0) -> bool:
        del timeout
        return True

    async def trending(self, tenant_id: str, query: TrendingQuery) -> Answer[TrendingRow]:
        return await self._query(lambda con: queries.trending(con, tenant_id, query))

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
        return await self._query(
            lambda con: queries.user_activity(
                con, tenant_id, since_us, min_engagement, engagement_metrics, after, limit
            )
        )

    async def set_emv_rates(
        self, tenant_id: str, rates: dict[tuple[str, str], float | None]
    ) -> None:
        async def write(con: asyncpg.Connection) -> None:
            async with con.transaction():
                for (platform, metric), value in rates.items():
                    if value is None:
                        await con.execute(
                            "DELETE FROM emv_rates WHERE tenant_id = $1 AND platform = $2 "
                            "AND metric = $3",
                            tenant_id,
                            platform,
                            metric,
                        )
                    else:
                        await con.execute(
                            "INSERT INTO emv_rates VALUES ($1, $2, $3, $4) ON CONFLICT "
                            "(tenant_id, platform, metric) DO UPDATE SET value = excluded.value",
                            tenant_id,
                            platform,
                            metric,
                            value,
                        )

        await self._db.run(write)

    async def rebuild(self, progress: Callable[[int, int], None]) -> int:
        """Recompute every rollup from the raw events, one partition at a time.

        Runs in one transaction that locks the rollups: commits wait for it, and
        queries see the old rollups until it commits.
        """

        async def run(con: asyncpg.Connection) -> int:
            partitions = await con.fetch(
                "SELECT c.relname, c.reltuples FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
            )
            async with con.transaction():
                await con.execute(f"LOCK TABLE {', '.join(ROLLUP_TABLES)} IN EXCLUSIVE MODE")
                await con.execute(f"TRUNCATE {', '.join(ROLLUP_TABLES)}")
                counts = [
                    int(await con.fetchval(f'SELECT count(*) FROM "{name}"'))  # noqa: S608
                    for name, _ in partitions
                ]
                total = sum(counts)
                done = 0
                progress(0, total)
                for (name, _), count in zip(partitions, counts, strict=True):
                    for statement in rollup_statements(f'"{name}"'):
                        await con.execute(statement)
                    done += count
                    progress(done, total)
            return done

        return await self._db.run(run)
