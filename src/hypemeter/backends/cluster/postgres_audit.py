"""The audit log's store on PostgreSQL: a table in the deployment's schema."""

from __future__ import annotations

import asyncpg

from hypemeter.auth.audit import (
    AUDIT_COLUMNS,
    AuditEntry,
    AuditQuery,
    entry_from_row,
    entry_values,
)
from hypemeter.backends.cluster.postgres_schema import MIGRATION_LOCK
from hypemeter.backends.cluster.postgres_store import _Shared

DDL = (
    "CREATE TABLE IF NOT EXISTS audit_log ("
    "entry_id TEXT NOT NULL, tenant_id TEXT NOT NULL, at_us BIGINT NOT NULL, "
    "key_id TEXT NOT NULL, action TEXT NOT NULL, target_type TEXT NOT NULL, "
    "target_id TEXT NOT NULL, status INTEGER NOT NULL, ip TEXT NOT NULL, "
    "fields TEXT[] NOT NULL, PRIMARY KEY (tenant_id, entry_id))",
    "CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at_us)",
)


def list_sql(query: AuditQuery) -> tuple[str, list[object]]:
    """The page query; every value is a parameter."""
    where: list[str] = ["tenant_id = $1"]
    params: list[object] = [query.tenant_id]
    for column, op, value in (
        ("at_us", ">=", query.since_us),
        ("key_id", "=", query.key_id),
        ("action", "=", query.action),
        ("entry_id", "<", query.before),
    ):
        if value is not None:
            params.append(value)
            where.append(f"{column} {op} ${len(params)}")
    sql = (
        f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} "  # noqa: S608
        f"ORDER BY entry_id DESC LIMIT ${len(params) + 1}"
    )
    return sql, [*params, query.limit]


async def _migrate(con: asyncpg.Connection) -> None:
    # Several API processes may start at once: the lock keeps their DDL apart.
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        for statement in DDL:
            await con.execute(statement)


class PostgresAuditStore(_Shared):
    """AuditStore port on PostgreSQL."""

    async def start(self) -> None:
        await super().start()
        await self._db.run(_migrate)

    async def append(self, entry: AuditEntry) -> None:
        sql = (
            f"INSERT INTO audit_log ({AUDIT_COLUMNS}) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )
        await self._db.run(lambda con: con.execute(sql, *entry_values(entry)))

    async def list_entries(self, query: AuditQuery) -> list[AuditEntry]:
        sql, params = list_sql(query)
        rows = await self._db.run(lambda con: con.fetch(sql, *params))
        return [entry_from_row(list(row)) for row in rows]

    async def purge(self, before_us: int) -> int:
        status = await self._db.run(
            lambda con: con.execute("DELETE FROM audit_log WHERE at_us < $1", before_us)
        )
        return int(str(status).rsplit(" ", 1)[-1])
