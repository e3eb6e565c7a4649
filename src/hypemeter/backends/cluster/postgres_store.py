"""The EventStore, TenantStore and MetricsStore ports on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import asyncpg
import pyarrow as pa

from hypemeter.auth.model import ApiKey, Tenant
from hypemeter.auth.ports import StreamTokenRecord
from hypemeter.backends.cluster import postgres_retention as retention
from hypemeter.backends.cluster.postgres_database import PostgresDatabase
from hypemeter.backends.cluster.postgres_erasure import erase_influencer
from hypemeter.backends.cluster.postgres_schema import ROLLUP_TABLES
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
        try:
            return await self._db.run_retrying(
                lambda con: erase_influencer(con, tenant_id, influencer_id)
            )
        finally:
            self._db.rewrites += 1  # copies of the rollups in this process are stale

    async def expired_days(self, cutoff_us: int) -> list[ExpiredDay]:
        rows = await self._db.run(lambda con: retention.expired_days(con, cutoff_us))
        return [ExpiredDay(*row) for row in rows]

    async def purge_day(self, tenant_id: str, day_us: int, cutoff_us: int) -> int:
        purged = await self._db.run_retrying(
            lambda con: retention.purge_day(con, tenant_id, day_us, cutoff_us)
        )
        if purged:
            self._db.rewrites += 1
        return purged

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
