"""RegistryStore port on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence

from hypemeter.backends.cluster.postgres_store import _Shared
from hypemeter.backends.sql import (
    REGISTRY_COLUMNS,
    record_from_row,
    registry_list_sql,
    registry_params,
    registry_values,
)
from hypemeter.registry.model import RegistryRecord

_INSERT = (
    f"INSERT INTO registry (tenant_id, {REGISTRY_COLUMNS}) "  # noqa: S608
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING entity_id"
)
_UPDATE = (
    "UPDATE registry SET doc = $4, keys = $5, search = $6, updated_us = $7 "
    "WHERE tenant_id = $1 AND kind = $2 AND entity_id = $3 RETURNING entity_id"
)
_SELECT_ONE = (
    f"SELECT {REGISTRY_COLUMNS} FROM registry "  # noqa: S608
    "WHERE tenant_id = $1 AND kind = $2 AND entity_id = $3"
)
_DELETE = (
    "DELETE FROM registry WHERE tenant_id = $1 AND kind = $2 AND entity_id = $3 RETURNING entity_id"
)
_PURGE = (
    "DELETE FROM registry WHERE (tenant_id, kind, entity_id) IN (SELECT tenant_id, kind, "
    "entity_id FROM registry WHERE kind = $1 AND updated_us < $2 LIMIT $3) RETURNING tenant_id"
)


class PostgresRegistryStore(_Shared):
    async def insert_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        row = await self._db.run(
            lambda con: con.fetchval(_INSERT, tenant_id, *registry_values(record))
        )
        return row is not None

    async def update_entity(self, tenant_id: str, record: RegistryRecord) -> bool:
        row = await self._db.run(
            lambda con: con.fetchval(_UPDATE, tenant_id, *registry_values(record))
        )
        return row is not None

    async def get_entity(self, tenant_id: str, kind: str, entity_id: str) -> RegistryRecord | None:
        row = await self._db.run(lambda con: con.fetchrow(_SELECT_ONE, tenant_id, kind, entity_id))
        return record_from_row(row) if row is not None else None

    async def delete_entity(self, tenant_id: str, kind: str, entity_id: str) -> bool:
        row = await self._db.run(lambda con: con.fetchval(_DELETE, tenant_id, kind, entity_id))
        return row is not None

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
            len(tokens), search=search is not None, after=after is not None, param=lambda n: f"${n}"
        )
        params = registry_params(
            tenant_id, kind, tokens=tokens, search=search, after=after, limit=limit
        )
        rows = await self._db.run(lambda con: con.fetch(sql, *params))
        return [record_from_row(r) for r in rows]

    async def all_entities(
        self, kind: str, tenant_id: str | None = None
    ) -> list[tuple[str, RegistryRecord]]:
        where, params = "WHERE kind = $1 ", [kind]
        if tenant_id is not None:
            where, params = where + "AND tenant_id = $2 ", [kind, tenant_id]
        sql = (
            f"SELECT tenant_id, {REGISTRY_COLUMNS} FROM registry {where}"  # noqa: S608
            "ORDER BY tenant_id, entity_id"
        )
        rows = await self._db.run(lambda con: con.fetch(sql, *params))
        return [(str(r[0]), record_from_row(list(r)[1:])) for r in rows]

    async def purge_entities(self, kind: str, updated_before_us: int, *, limit: int) -> list[str]:
        rows = await self._db.run(lambda con: con.fetch(_PURGE, kind, updated_before_us, limit))
        return [str(r[0]) for r in rows]

    async def reclaim(self) -> None:
        # Marks the old versions' space free (the table is small); their bytes stay in
        # PostgreSQL's files, WAL and backups until they are written over or expire.
        await self._db.run(lambda con: con.execute("VACUUM registry"))
