"""The audit log's store on the embedded DuckDB file: a table beside the tenants'."""

from __future__ import annotations

import duckdb

from hypemeter.auth.audit import (
    AUDIT_COLUMNS,
    AuditEntry,
    AuditQuery,
    entry_from_row,
    entry_values,
)
from hypemeter.backends.embedded.duckdb_store.adapters import _SharedFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    entry_id VARCHAR NOT NULL, tenant_id VARCHAR NOT NULL, at_us BIGINT NOT NULL,
    key_id VARCHAR NOT NULL, action VARCHAR NOT NULL, target_type VARCHAR NOT NULL,
    target_id VARCHAR NOT NULL, status INTEGER NOT NULL, ip VARCHAR NOT NULL,
    fields VARCHAR[] NOT NULL, PRIMARY KEY (tenant_id, entry_id));
"""


def list_sql(query: AuditQuery) -> tuple[str, list[object]]:
    """The page query; every value is a parameter."""
    where: list[str] = ["tenant_id = ?"]
    params: list[object] = [query.tenant_id]
    for clause, value in (
        ("at_us >= ?", query.since_us),
        ("key_id = ?", query.key_id),
        ("action = ?", query.action),
        ("entry_id < ?", query.before),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = (
        f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {' AND '.join(where)} "  # noqa: S608
        "ORDER BY entry_id DESC LIMIT ?"
    )
    return sql, [*params, query.limit]


class DuckDBAuditStore(_SharedFile):
    """AuditStore port on the embedded DuckDB file; writes go through its one writer."""

    async def start(self) -> None:
        await super().start()
        await self._db.run(lambda con: con.execute(SCHEMA))

    async def append(self, entry: AuditEntry) -> None:
        def insert(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                f"INSERT INTO audit_log ({AUDIT_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                entry_values(entry),
            )

        await self._db.run(insert)

    async def list_entries(self, query: AuditQuery) -> list[AuditEntry]:
        sql, params = list_sql(query)

        def select(con: duckdb.DuckDBPyConnection) -> list[AuditEntry]:
            return [entry_from_row(row) for row in con.execute(sql, params).fetchall()]

        return await self._db.read(select)

    async def purge(self, before_us: int) -> int:
        def delete(con: duckdb.DuckDBPyConnection) -> int:
            rows = con.execute(
                "DELETE FROM audit_log WHERE at_us < ? RETURNING entry_id", [before_us]
            ).fetchall()
            return len(rows)

        return await self._db.run(delete)
