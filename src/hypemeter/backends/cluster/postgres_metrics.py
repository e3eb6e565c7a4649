"""The MetricsStore port on PostgreSQL: rollups kept in the transaction of their events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg

from hypemeter.backends.cluster import postgres_queries as queries
from hypemeter.backends.cluster.postgres_schema import ROLLUP_TABLES
from hypemeter.backends.cluster.postgres_store import Query, _Shared
from hypemeter.backends.cluster.rollup_sql import rollup_statements
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

T = TypeVar("T")


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

    async def cache_load(self, since_us: int) -> CacheLoad:
        async with self._db.pinned() as (con, seq):
            counters, engagement, tags = await queries.cache_tables(con, since_us)
        return CacheLoad(seq, counters, engagement, tags)

    def rewrites(self) -> int:
        return self._db.rewrites

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
