"""RegistryStore port on the embedded DuckDB file."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from hypemeter.backends.embedded.duckdb_store.adapters import _SharedFile
from hypemeter.backends.embedded.duckdb_store.erasure import mark_rewrite
from hypemeter.backends.embedded.duckdb_store.transactions import transaction
from hypemeter.backends.sql import (
    REGISTRY_COLUMNS,
    record_from_row,
    registry_list_sql,
    registry_params,
    registry_values,
)
from hypemeter.registry.model import RegistryRecord

# A document is blanked in the transaction that deletes it: a checkpoint writes deleted
# rows into the file (marked deleted) while rows of their row group live on.
_BLANK = "UPDATE registry SET doc = '', keys = '', search = '' "
_SELECT_ONE = (
    f"SELECT {REGISTRY_COLUMNS} FROM registry "  # noqa: S608
    "WHERE tenant_id = ? AND kind = ? AND entity_id = ?"
)


class DuckDBRegistryStore(_SharedFile):
    async def insert_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        def insert(con: duckdb.DuckDBPyConnection) -> bool:
            rows = con.execute(
                f"INSERT INTO registry (tenant_id, {REGISTRY_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING entity_id",
                [tenant_id, *registry_values(record)],
            ).fetchall()
            return bool(rows)

        return await self._db.run(insert)

    async def update_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        def update(con: duckdb.DuckDBPyConnection) -> bool:
            rows = con.execute(
                "UPDATE registry SET doc = $4, keys = $5, search = $6, updated_us = $7 "
                "WHERE tenant_id = $1 AND kind = $2 AND entity_id = $3 RETURNING entity_id",
                [tenant_id, *registry_values(record)],
            ).fetchall()
            return bool(rows)

        return await self._db.run(update)

    async def get_entity(self, tenant_id: str, kind: str, entity_id: str) -> RegistryRecord | None:
        def select(con: duckdb.DuckDBPyConnection) -> RegistryRecord | None:
            rows = con.execute(_SELECT_ONE, [tenant_id, kind, entity_id]).fetchall()
            return record_from_row(rows[0]) if rows else None

        return await self._db.read(select)

    async def delete_entity(self, tenant_id: str, kind: str, entity_id: str) -> bool:
        def delete(con: duckdb.DuckDBPyConnection) -> bool:
            with transaction(con):
                con.execute(
                    _BLANK + "WHERE tenant_id = ? AND kind = ? AND entity_id = ?",
                    [tenant_id, kind, entity_id],
                )
                rows = con.execute(
                    "DELETE FROM registry WHERE tenant_id = ? AND kind = ? AND entity_id = ? "
                    "RETURNING entity_id",
                    [tenant_id, kind, entity_id],
                ).fetchall()
            return bool(rows)

        return await self._db.run(delete)

    async def list_entities(
        self,
        tenant_id: str,
        kind: str,
        *,
        tokens: Sequence[str],
        search: str | None,
        after: str | None,
        limit: int,
    ) -> list[RegistryRecord]:
        sql = registry_list_sql(
            len(tokens), search=search is not None, after=after is not None, param=lambda _: "?"
        )
        params = registry_params(
            tenant_id, kind, tokens=tokens, search=search, after=after, limit=limit
        )

        def select(con: duckdb.DuckDBPyConnection) -> list[RegistryRecord]:
            return [record_from_row(r) for r in con.execute(sql, params).fetchall()]

        return await self._db.read(select)

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        where, params = "WHERE kind = ? ", [kind]
        if tenant_id is not None:
            where, params = where + "AND tenant_id = ? ", [kind, tenant_id]

        def select(con: duckdb.DuckDBPyConnection) -> list[tuple[str, RegistryRecord]]:
            rows = con.execute(
                f"SELECT tenant_id, {REGISTRY_COLUMNS} FROM registry {where}"  # noqa: S608
                "ORDER BY tenant_id, entity_id",
                params,
            ).fetchall()
            return [(str(r[0]), record_from_row(r[1:])) for r in rows]

        return await self._db.read(select)

    async def purge_entities(self, kind: str, updated_before_us: int, *, limit: int) -> list[str]:
        def delete(con: duckdb.DuckDBPyConnection) -> list[str]:
            with transaction(con):
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE purged_documents AS SELECT rowid AS id "
                    "FROM registry WHERE kind = ? AND updated_us < ? LIMIT ?",
                    [kind, updated_before_us, limit],
                )
                con.execute(_BLANK + "WHERE rowid IN (SELECT id FROM purged_documents)")  # noqa: S608
                rows = con.execute(
                    "DELETE FROM registry WHERE rowid IN (SELECT id FROM purged_documents) "
                    "RETURNING tenant_id"
                ).fetchall()
                con.execute("DROP TABLE purged_documents")
            return [str(r[0]) for r in rows]

        return await self._db.run(delete)

    async def reclaim(self) -> None:
        # DuckDB does not clear the blocks it frees: the old versions stay in the file
        # until the rewrite at the next start.
        await self._db.run(mark_rewrite)
