"""One group commit of the PostgreSQL store: the statements of its transaction.

In order: claim the event ids (the first copy of each id the store has never
stored is kept), turn kept snapshot readings into deltas under row locks, COPY
the kept events straight into their time partition of ``events``, then COPY the
commit's rollup rows (grouped in memory, ``rollup_rows``) into a staging table
and merge them, one upsert per rollup row, all seven tables in one round trip;
last, number the commit. Every lock is taken in key order. The per-event work
is columnar (Arrow, numpy, CSV written by Arrow for COPY); only snapshot
readings, a small share of the events, go through Python one by one. Round
trips are few on purpose: on a busy machine each one waits for the scheduler.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from hypemeter.backends.cluster import postgres_schema as schema
from hypemeter.backends.cluster.postgres_schema import ROLLUP_TABLES
from hypemeter.backends.cluster.rollup_rows import FOLD_COLUMNS, fold
from hypemeter.backends.cluster.rollup_sql import STAGED, merge_staged, staged_columns, staging_ddl
from hypemeter.backends.commit_group import (
    SERIES_COLUMNS,
    SeriesKey,
    fold_readings,
    group_table,
    kept_readings,
    per_append,
)
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import Reading
from hypemeter.events.ports import EXPORT_COLUMNS, AppendResult

# The columns of ``events`` a commit writes, in table order (``n`` is numbered by
# its default, in the order of the rows).
EVENT_COLUMNS = (
    "tenant_id",
    *EXPORT_COLUMNS[:8],  # event_id ... value
    "delta",
    *EXPORT_COLUMNS[8:],  # ts_us ... properties
    "ingested_at_us",
)
_MERGE = merge_staged()
_ARROW_TYPES = {
    "smallint": pa.int16(),
    "bigint": pa.int64(),
    "double precision": pa.float64(),
    'text COLLATE "C"': pa.string(),
}
_STAGED_SCHEMA = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in staged_columns().items()])
_CSV = pa_csv.WriteOptions(include_header=False)
_STR = pa.string()
_IDS = "hm_in_ids"
_IDS_DDL = f"CREATE TEMP TABLE IF NOT EXISTS {_IDS} (LIKE event_ids) ON COMMIT DELETE ROWS"


async def prepare_connection(con: asyncpg.Connection) -> None:
    """Make the session's staging tables (every pooled connection, once)."""
    for statement in (_IDS_DDL, staging_ddl()):
        await con.execute(statement)


@dataclass(frozen=True, slots=True)
class Group:
    """The events of a group of appends as one Arrow table (a ``tenant_id`` column in
    front), the size of each append, and the event times in microseconds."""

    table: pa.Table
    sizes: list[int]
    ts_us: np.ndarray[Any, np.dtype[np.int64]]

    @classmethod
    def of(cls, appends: list[tuple[str, EventBatch, int]]) -> Group:
        table, sizes = group_table([(tenant, batch) for tenant, batch, _ in appends])
        ts = np.asarray(table.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
        return cls(table, sizes, ts)

    def days(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        return self.ts_us // 86_400_000_000

    def results(
        self, keep: np.ndarray[Any, Any], deltas: np.ndarray[Any, Any], seq: int, at_us: int
    ) -> list[AppendResult]:
        """One AppendResult per append: its counts, and its kept events as its change set."""
        kept = self.table.append_column("delta", pa.array(deltas, pa.float64()))
        return per_append(keep, self.sizes, kept.filter(pa.array(keep)), seq, at_us)


async def commit(
    con: asyncpg.Connection, group: Group, now_us: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], int]:
    """Run the group's transaction: (keep mask, deltas, commit number)."""
    async with con.transaction():
        keep = await claim_ids(con, group)
        deltas = await snapshot_deltas(con, group, keep)
        kept = np.flatnonzero(keep)
        if len(kept):
            events = _kept_events(group, kept, deltas)
            await _copy_events(con, events, group.ts_us[kept], now_us)
            await _copy_csv(con, STAGED, _staged(fold(events.select(FOLD_COLUMNS))))
            await con.execute(_MERGE)
        seq = int(await con.fetchval("UPDATE hm_seq SET seq = seq + 1 RETURNING seq"))
    return keep, deltas, seq


def _kept_events(
    group: Group, kept: np.ndarray[Any, Any], deltas: np.ndarray[Any, Any]
) -> pa.Table:
    rows = pa.array(kept)
    table = group.table.take(rows)
    return table.append_column("delta", pa.array(deltas[kept], pa.float64())).append_column(
        "ts_us", pa.array(group.ts_us[kept], pa.int64())
    )


def _staged(rollups: dict[str, pa.Table]) -> pa.Table:
    """Every rollup's rows in the columns of the staging table, numbered by table."""
    parts = []
    for number, table in enumerate(ROLLUP_TABLES):
        rows = rollups.get(table)
        if rows is None:
            continue
        n = rows.num_rows
        columns = {
            name: rows.column(name) if name in rows.column_names else pa.nulls(n, kind)
            for name, kind in zip(_STAGED_SCHEMA.names, _STAGED_SCHEMA.types, strict=True)
        }
        columns["rollup"] = pa.array(np.full(n, number, dtype=np.int16))
        parts.append(pa.table(columns, schema=_STAGED_SCHEMA))
    return pa.concat_tables(parts)


async def _copy_csv(con: asyncpg.Connection, table: str, rows: pa.Table) -> None:
    """COPY the rows (CSV made by Arrow: a null is an empty field, an empty string
    is quoted) into ``table``, columns in order."""
    sink = io.BytesIO()
    pa_csv.write_csv(rows, sink, _CSV)
    # An async source: asyncpg would read a file object in a thread, chunk by chunk.
    await con.copy_to_table(
        table, source=_once(sink.getvalue()), columns=rows.column_names, format="csv"
    )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _copy_events(
    con: asyncpg.Connection, events: pa.Table, ts_us: np.ndarray[Any, Any], now_us: int
) -> None:
    """COPY the events (CSV made by Arrow) into their month's partition of ``events``, or
    through ``events`` itself when they span months (rows are numbered in group order)."""
    months = {schema.month_of(int(t)) for t in (ts_us.min(), ts_us.max())}
    target = schema.partition_name(*months.pop()) if len(months) == 1 else "events"
    computed = ("tags", "ingested_at_us")
    columns = {name: events.column(name) for name in EVENT_COLUMNS if name not in computed}
    columns["tags"] = array_literals(events.column("tags"))
    columns["ingested_at_us"] = pa.array(np.full(events.num_rows, now_us, dtype=np.int64))
    await _copy_csv(con, target, pa.table({name: columns[name] for name in EVENT_COLUMNS}))


def array_literals(lists: pa.ChunkedArray | pa.Array) -> pa.Array:
    """PostgreSQL array literals (``{"a","b\\"c"}``) of a list<string> column; null stays null."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    values = pc.list_flatten(lists)
    quoted = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', quoted, '"', "")
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    rebuilt = pa.ListArray.from_arrays(pa.array(offsets), quoted, mask=pc.is_null(lists))
    joined = pc.binary_join(rebuilt, ",")
    return pc.binary_join_element_wise("{", joined, "}", "")


async def claim_ids(con: asyncpg.Connection, group: Group) -> np.ndarray[Any, Any]:
    """Keep mask: rows whose id no earlier commit, nor an earlier row of the group, stored."""
    table = group.table
    named = np.asarray(table.column("has_id").to_numpy(zero_copy_only=False), dtype=np.bool_)
    keep = ~named
    rows = np.flatnonzero(named)
    if not len(rows):
        return keep
    candidates = pa.table(
        {
            "tenant_id": table.column("tenant_id").take(rows),
            "event_id": table.column("event_id").take(rows),
            "row": pa.array(rows, pa.int64()),
        }
    )
    first = candidates.group_by(["tenant_id", "event_id"], use_threads=False).aggregate(
        [("row", "min")]
    )
    first = first.sort_by([("tenant_id", "ascending"), ("event_id", "ascending")])
    await _copy_csv(con, _IDS, first.select(["tenant_id", "event_id"]))
    claimed = await con.fetch(
        f"INSERT INTO event_ids SELECT * FROM {_IDS} "  # noqa: S608
        "ON CONFLICT DO NOTHING RETURNING tenant_id, event_id"
    )
    if claimed:
        stored = pa.array([f"{tenant}\0{event_id}" for tenant, event_id in claimed], _STR)
        keys = pc.binary_join_element_wise(
            first.column("tenant_id"), first.column("event_id"), "\0"
        )
        new = pc.is_in(keys, value_set=stored).to_numpy(zero_copy_only=False)
        keep[first.column("row_min").to_numpy()[new]] = True
    return keep


_SERIES = SERIES_COLUMNS
_UNNEST = "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])"
_NAMES = ", ".join(_SERIES)


async def snapshot_deltas(
    con: asyncpg.Connection, group: Group, keep: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Values, with each kept snapshot replaced by its delta against the series' last reading."""
    table = group.table
    deltas = np.asarray(table.column("value").to_numpy(), dtype=np.float64).copy()
    rows, keys, readings = kept_readings(table, keep)
    if not len(rows):
        return deltas
    series = sorted(set(keys))
    arrays = [[key[n] for key in series] for n in range(len(_SERIES))]
    # Placeholders first: a series nobody has read yet must be locked too.
    await con.execute(
        f"INSERT INTO snapshot_state ({_NAMES}) SELECT * FROM {_UNNEST} "  # noqa: S608
        f"AS u({_NAMES}) ORDER BY {_NAMES} ON CONFLICT DO NOTHING",
        *arrays,
    )
    found = await con.fetch(
        f"SELECT {_NAMES}, last_ts_us, last_value FROM snapshot_state "  # noqa: S608
        f"WHERE ({_NAMES}) IN (SELECT * FROM {_UNNEST}) ORDER BY {_NAMES} FOR UPDATE",
        *arrays,
    )
    stored: dict[SeriesKey, Reading] = {
        (r[0], r[1], r[2], r[3], r[4]): Reading(int(r[5]), float(r[6]))
        for r in found
        if r[5] is not None
    }
    folded, state = fold_readings(keys, readings, stored.get)
    deltas[rows] = folded
    changed = sorted(state)
    latest = [state[key] for key in changed]
    await con.execute(
        "UPDATE snapshot_state s SET last_ts_us = u.t, last_value = u.v "  # noqa: S608
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
        f"$6::bigint[], $7::float8[]) AS u({_NAMES}, t, v) "
        + "WHERE "
        + " AND ".join(f"s.{n} = u.{n}" for n in _SERIES),
        *[[key[n] for key in changed] for n in range(len(_SERIES))],
        [r.ts_us for r in latest],
        [r.value for r in latest],
    )
    return deltas
