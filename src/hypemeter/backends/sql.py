"""Row layouts and SQL shared by the two SQL backends (DuckDB and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hypemeter.auth.model import ApiKey, Scope, limits_from_json, limits_to_json
from hypemeter.auth.ports import StreamTokenRecord
from hypemeter.metrics.queries import Answer, CounterRow
from hypemeter.registry.model import RegistryRecord

# How the stores lay out a key and a stream token as a row (SQL column lists, in order).
KEY_COLUMNS = "key_id, tenant_id, key_hash, scopes, name, created_at_us, revoked_at_us, limits"

TOKEN_COLUMNS = (
    "subscription_id, tenant_id, key_id, token_hash, filter, metrics, "  # noqa: S105
    "expires_us, tail"
)


def key_values(key: ApiKey) -> list[Any]:
    """An API key as a row of KEY_COLUMNS."""
    return [
        key.key_id,
        key.tenant_id,
        key.key_hash,
        sorted(s.value for s in key.scopes),
        key.name,
        key.created_at_us,
        key.revoked_at_us,
        limits_to_json(key.limits),
    ]


def key_from_row(row: Sequence[Any]) -> ApiKey:
    """An API key from a row of KEY_COLUMNS."""
    return ApiKey(
        key_id=row[0],
        tenant_id=row[1],
        key_hash=row[2],
        scopes=frozenset(Scope(s) for s in row[3]),
        name=row[4],
        created_at_us=row[5],
        revoked_at_us=row[6],
        limits=limits_from_json(row[7]),
    )


def token_from_row(row: Sequence[Any]) -> StreamTokenRecord:
    """A stream token from a row of TOKEN_COLUMNS."""
    return StreamTokenRecord(
        row[0], row[1], row[2], row[3], row[4], tuple(row[5]), row[6], bool(row[7])
    )


def counter_answer(rows: Sequence[Sequence[Any]], width: int) -> Answer[CounterRow]:
    """Counter rows from rows of (``width`` dimensions, bucket, metric, total, events,
    rows read)."""
    out = [
        CounterRow(
            tuple(r[:width]),
            None if r[width] is None else int(r[width]),
            r[width + 1],
            float(r[width + 2]),
            int(r[width + 3]),
        )
        for r in rows
    ]
    return Answer(out, sum(int(r[width + 4]) for r in rows))


REGISTRY_COLUMNS = "kind, entity_id, doc, keys, search, updated_us"


def registry_list_sql(
    tokens: int, *, search: bool, after: bool, param: Callable[[int], str]
) -> str:
    """The page query of ``RegistryStore.list_entities``; ``param(n)`` spells the n-th
    (1-based) placeholder. Parameters: tenant, kind, then [after], tokens, [search], limit."""
    where = [f"tenant_id = {param(1)}", f"kind = {param(2)}"]
    n = 3
    if after:
        where.append(f"entity_id > {param(n)}")
        n += 1
    for _ in range(tokens):
        where.append(f"strpos(keys, {param(n)}) > 0")
        n += 1
    if search:
        where.append(f"strpos(search, {param(n)}) > 0")
        n += 1
    clauses = " AND ".join(where)
    return (
        f"SELECT {REGISTRY_COLUMNS} FROM registry WHERE {clauses} "  # noqa: S608
        f"ORDER BY entity_id LIMIT {param(n)}"
    )


def registry_params(
    tenant_id: str,
    kind: str,
    *,
    tokens: Sequence[str],
    search: str | None,
    after: str | None,
    limit: int,
) -> list[Any]:
    out: list[Any] = [tenant_id, kind]
    if after is not None:
        out.append(after)
    out.extend(tokens)
    if search is not None:
        out.append(search)
    out.append(limit)
    return out


def registry_values(record: RegistryRecord) -> tuple[Any, ...]:
    """A record in REGISTRY_COLUMNS order."""
    return (
        record.kind,
        record.entity_id,
        record.doc,
        record.keys,
        record.search,
        record.updated_us,
    )


def record_from_row(row: Sequence[Any]) -> RegistryRecord:
    return RegistryRecord(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), int(row[5])
    )
