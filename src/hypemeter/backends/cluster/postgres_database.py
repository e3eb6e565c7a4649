"""The PostgreSQL store's connections and its write path.

Appends queue up while a commit runs and are committed together (group
commit), each group in one transaction that claims the event ids (exact
deduplication, forever), turns snapshot readings into deltas under row locks,
inserts the events and updates every rollup. Several processes may write at
once: all locks are taken in key order, and a transaction that still meets a
deadlock or a serialization failure is retried whole.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import numpy as np
import pyarrow as pa

from hypemeter.backends.cluster import postgres_schema as schema
from hypemeter.backends.cluster.rollup_sql import rollup_statements
from hypemeter.backends.dsn import redacted, split_param
from hypemeter.clock import Clock
from hypemeter.errors import InvalidInput, Overloaded, StoreUnavailable
from hypemeter.events.batch import EventBatch, tables_in_order
from hypemeter.events.model import Reading, snapshot_delta
from hypemeter.events.ports import EXPORT_COLUMNS, AppendResult

log = logging.getLogger("hypemeter.store")
T = TypeVar("T")
COMMIT_ATTEMPTS = 6
SIZE_REFRESH_SECONDS = 10.0
_STAGED = "hm_staged"
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection cut in the middle of a statement, say
    asyncio.TimeoutError,
)
# The columns of ``events``, in table order.
_EVENT_COLUMNS = (
    "tenant_id",
    *EXPORT_COLUMNS[:8],  # event_id ... value
    "delta",
    *EXPORT_COLUMNS[8:],  # ts_us ... properties
    "ingested_at_us",
)
_STAGED_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGED} (LIKE events INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS"
)


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    queue_limit: int
    commit_max_events: int
    pool_size: int = 8
    connect_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where the store lives: the DSN asyncpg connects with, and the schema (None: public)."""

    dsn: str
    schema: str | None

    @classmethod
    def parse(cls, dsn: str) -> Target:
        """Split off the ``schema`` query parameter, which asyncpg does not know."""
        rest, schema_name = split_param(dsn, "schema")
        if schema_name is not None and not schema_name.replace("_", "").isalnum():
            raise InvalidInput(
                f"the store DSN's schema {schema_name!r} must be letters, digits and _",
                field="store",
            )
        return cls(rest, schema_name)


@dataclass(slots=True)
class _Append:
    tenant_id: str
    batch: EventBatch
    size: int
    future: asyncio.Future[AppendResult]


class PostgresDatabase:
    """The connection pool and group committer shared by the PostgreSQL adapters."""

    def __init__(self, dsn: str, *, clock: Clock, config: PostgresConfig) -> None:
        self.target = Target.parse(dsn)
        self._clock = clock
        self._config = config
        self._users = 0
        self._pool: asyncpg.Pool | None = None
        self._queue: asyncio.Queue[_Append | None] = asyncio.Queue()
        self._pending = 0
        self._committer: asyncio.Task[None] | None = None
        # Held by the committer around each group; tests hold it to make appends pile up.
        self.gate = asyncio.Lock()
        self._months: set[tuple[int, int]] = set()
        self._size, self._size_at = 0, 0.0
        self.rewrites = 0  # stored events changed without a commit (erasure, purge)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self._users += 1
        if self._users > 1:
            return
        try:
            await self._open()
        except BaseException:
            self._users = 0
            raise

    async def _open(self) -> None:
        settings = {"timezone": "UTC"}
        if self.target.schema is not None:
            settings["search_path"] = self.target.schema
        try:
            con = await asyncpg.connect(
                self.target.dsn, timeout=self._config.connect_timeout, server_settings=settings
            )
            try:
                await schema.migrate(con, self.target.schema)
            finally:
                await con.close()
            self._pool = await asyncpg.create_pool(
                self.target.dsn,
                min_size=1,
                max_size=self._config.pool_size,
                timeout=self._config.connect_timeout,
                server_settings=settings,
                init=_prepare_connection,
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"cannot open the store {redacted(self.target.dsn)}: {exc}"
            ) from exc
        await self._refresh_size(force=True)
        self._committer = asyncio.create_task(self._commit_loop(), name="hypemeter-pg-commit")

    async def stop(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users:
            return
        if self._committer is not None:
            await self._queue.put(None)
            await self._committer
            self._committer = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def open(self) -> bool:
        return self._users > 0 and self._pool is not None

    def pool(self) -> asyncpg.Pool:
        if not self.open or self._pool is None:
            raise StoreUnavailable("the store is closed")
        return self._pool

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection; connection failures become StoreUnavailable."""
        try:
            async with self.pool().acquire() as con:
                try:
                    return await fn(con)
                except asyncpg.InternalClientError:
                    con.terminate()  # its protocol state is unknown: the pool replaces it
                    raise
        except _UNAVAILABLE as exc:
            if isinstance(exc, asyncpg.PostgresError) and not _is_connection_error(exc):
                raise
            raise StoreUnavailable(f"the store is unavailable: {exc}") from exc

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[tuple[asyncpg.Connection, int]]:
        """A connection in a read-only snapshot that sees exactly commits 1..seq."""
        try:
            async with self.pool().acquire() as con:
                transaction = con.transaction(isolation="repeatable_read", readonly=True)
                await transaction.start()
                try:
                    seq = await con.fetchval("SELECT seq FROM hm_seq WHERE id = 1")
                    yield con, int(seq)
                finally:
                    with suppress(*_UNAVAILABLE):
                        await transaction.rollback()
        except _UNAVAILABLE as exc:
            if isinstance(exc, asyncpg.PostgresError) and not _is_connection_error(exc):
                raise
            raise StoreUnavailable(f"the store is unavailable: {exc}") from exc

    def now_us(self) -> int:
        return self._clock.now_us()

    # -- sizes ---------------------------------------------------------------

    def queue_depth(self) -> int:
        return self._pending

    def size_bytes(self) -> int:
        return self._size

    async def _refresh_size(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._size_at < SIZE_REFRESH_SECONDS:
            return
        self._size_at = time.monotonic()
        self._size = int(
            await self.run(
                lambda con: con.fetchval(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
                )
            )
        )

    # -- appends -------------------------------------------------------------

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        if not self.open:
            raise StoreUnavailable("the store is closed")
        size = len(batch)
        if self._pending and self._pending + size > self._config.queue_limit:
            raise Overloaded.queue_full(self._pending, self._config.queue_limit)
        self._pending += size
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Append(tenant_id, batch, size, future))
        return await future

    async def _commit_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            async with self.gate:
                group = [first]
                events = first.size
                while events < self._config.commit_max_events and not self._queue.empty():
                    job = self._queue.get_nowait()
                    if job is None:
                        stopping = True
                        break
                    group.append(job)
                    events += job.size
                await self._flush(group)

    async def _flush(self, group: list[_Append]) -> None:
        try:
            results = await self._commit_with_retries(group)
        except Exception as exc:
            log.exception("group commit of %d requests failed", len(group))
            self._pending -= sum(job.size for job in group)
            failure = StoreUnavailable(f"the store could not commit: {exc}")
            for job in group:
                if not job.future.done():
                    job.future.set_exception(failure)
            return
        self._pending -= sum(job.size for job in group)
        for job, result in zip(group, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)
        try:
            await self._refresh_size()
        except StoreUnavailable:
            log.warning("could not read the store's size")

    async def _commit_with_retries(self, group: list[_Append]) -> list[AppendResult]:
        staged = _Group.of(group)
        months = {schema.month_of(int(day) * 86_400_000_000) for day in np.unique(staged.days())}
        if months - self._months:
            await self.run(lambda con: schema.ensure_partitions(con, months))
            self._months |= months
        return await self.run_retrying(lambda con: self._commit(con, staged))

    async def run_retrying(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``run`` a transaction again (after a short random pause) when PostgreSQL
        aborted it for a deadlock or a serialization failure."""
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                return await self.run(fn)
            except _RETRYABLE:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")

    async def _commit(self, con: asyncpg.Connection, group: _Group) -> list[AppendResult]:
        now_us = self._clock.now_us()
        async with con.transaction():
            keep = await _claim_ids(con, group)
            deltas = await _snapshot_deltas(con, group, keep)
            kept = np.flatnonzero(keep)
            if len(kept):
                await con.copy_records_to_table(
                    _STAGED, records=group.records(kept, deltas, now_us), columns=_EVENT_COLUMNS
                )
                await con.execute(f"INSERT INTO events SELECT * FROM {_STAGED}")  # noqa: S608
                for statement in rollup_statements(_STAGED):
                    await con.execute(statement)
            seq = int(await con.fetchval("UPDATE hm_seq SET seq = seq + 1 RETURNING seq"))
        committed_us = self._clock.now_us()
        changes = group.table.append_column("delta", pa.array(deltas, pa.float64()))
        changes = changes.filter(pa.array(keep))
        results: list[AppendResult] = []
        offset = taken = 0
        for size in group.sizes:
            accepted = int(keep[offset : offset + size].sum())
            results.append(
                AppendResult(
                    accepted, size - accepted, seq, changes.slice(taken, accepted), committed_us
                )
            )
            offset += size
            taken += accepted
        return results


async def _prepare_connection(con: asyncpg.Connection) -> None:
    await con.execute(_STAGED_DDL)


def _is_connection_error(exc: asyncpg.PostgresError) -> bool:
    state = getattr(exc, "sqlstate", "") or ""
    # Class 08: connection exceptions; 57P0x: the server is shutting down or restarted.
    return state.startswith("08") or state.startswith("57P")


@dataclass(frozen=True, slots=True)
class _Group:
    """The events of a group of appends as one Arrow table, plus columns as Python lists."""

    table: pa.Table
    sizes: list[int]
    tenants: list[str]
    columns: dict[str, list[Any]]
    ts_us: np.ndarray[Any, np.dtype[np.int64]]

    @classmethod
    def of(cls, group: list[_Append]) -> _Group:
        tables = tables_in_order([job.batch for job in group])
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
        sizes = [job.size for job in group]
        tenants = [
            job.tenant_id for job, size in zip(group, sizes, strict=True) for _ in range(size)
        ]
        table = table.add_column(0, "tenant_id", pa.array(tenants, pa.string()))
        computed = {"tenant_id", "delta", "ts_us", "ingested_at_us"}
        names = ("has_id", *(c for c in _EVENT_COLUMNS if c not in computed))
        columns = {name: table.column(name).to_pylist() for name in names}
        ts = np.asarray(table.column("ts").cast(pa.int64()).to_numpy(), dtype=np.int64)
        return cls(table, sizes, tenants, columns, ts)

    def days(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        return self.ts_us // 86_400_000_000

    def records(
        self, rows: np.ndarray[Any, Any], deltas: np.ndarray[Any, Any], now_us: int
    ) -> list[tuple[Any, ...]]:
        c = self.columns
        return [
            (
                self.tenants[i],
                c["event_id"][i],
                c["influencer_id"][i],
                c["platform"][i],
                c["content_id"][i],
                c["campaign_id"][i],
                c["metric"][i],
                c["kind"][i],
                c["value"][i],
                float(deltas[i]),
                int(self.ts_us[i]),
                c["user_id"][i],
                c["text"][i],
                c["tags"][i],
                c["variant"][i],
                c["properties"][i],
                now_us,
            )
            for i in rows.tolist()
        ]


async def _claim_ids(con: asyncpg.Connection, group: _Group) -> np.ndarray[Any, Any]:
    """Keep mask: rows whose id no earlier commit, nor an earlier row of the group, stored."""
    has_id = group.columns["has_id"]
    ids = group.columns["event_id"]
    keep = np.array([not named for named in has_id], dtype=np.bool_)
    first: dict[tuple[str, str], int] = {}
    for i, named in enumerate(has_id):
        if named:
            first.setdefault((group.tenants[i], ids[i]), i)
    if not first:
        return keep
    pairs = sorted(first)
    claimed = await con.fetch(
        "INSERT INTO event_ids (tenant_id, event_id) "
        "SELECT t, e FROM unnest($1::text[], $2::text[]) AS u(t, e) ORDER BY t, e "
        "ON CONFLICT DO NOTHING RETURNING tenant_id, event_id",
        [t for t, _ in pairs],
        [e for _, e in pairs],
    )
    for row in claimed:
        keep[first[(row[0], row[1])]] = True
    return keep


_SERIES = ("tenant_id", "influencer_id", "platform", "content_id", "metric")


async def _snapshot_deltas(
    con: asyncpg.Connection, group: _Group, keep: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Values, with each kept snapshot replaced by its delta against the series' last reading."""
    c = group.columns
    deltas = np.array(c["value"], dtype=np.float64)
    rows = [i for i, kind in enumerate(c["kind"]) if kind == "snapshot" and keep[i]]
    if not rows:
        return deltas
    keys = [
        (
            group.tenants[i],
            c["influencer_id"][i],
            c["platform"][i],
            c["content_id"][i] or "",
            c["metric"][i],
        )
        for i in rows
    ]
    series = sorted(set(keys))
    arrays = [[key[n] for key in series] for n in range(len(_SERIES))]
    unnest = "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])"
    names = ", ".join(_SERIES)
    # Placeholders first: a series nobody has read yet must be locked too.
    await con.execute(
        f"INSERT INTO snapshot_state ({names}) SELECT * FROM {unnest} "  # noqa: S608
        f"AS u({names}) ORDER BY {names} ON CONFLICT DO NOTHING",
        *arrays,
    )
    found = await con.fetch(
        f"SELECT {names}, last_ts_us, last_value FROM snapshot_state "  # noqa: S608
        f"WHERE ({names}) IN (SELECT * FROM {unnest}) ORDER BY {names} FOR UPDATE",
        *arrays,
    )
    state: dict[tuple[str, ...], Reading | None] = {
        tuple(r[:5]): None if r[5] is None else Reading(int(r[5]), float(r[6])) for r in found
    }
    for i, key in zip(rows, keys, strict=True):
        delta, state[key] = snapshot_delta(
            state.get(key), Reading(int(group.ts_us[i]), c["value"][i])
        )
        deltas[i] = delta
    changed = [key for key in series if state.get(key) is not None]
    readings = [state[key] for key in changed]
    await con.execute(
        f"UPDATE snapshot_state s SET last_ts_us = u.t, last_value = u.v "  # noqa: S608
        f"FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
        f"$6::bigint[], $7::float8[]) AS u({names}, t, v) "
        + "WHERE "
        + " AND ".join(f"s.{n} = u.{n}" for n in _SERIES),
        *[[key[n] for key in changed] for n in range(len(_SERIES))],
        [r.ts_us for r in readings if r is not None],
        [r.value for r in readings if r is not None],
    )
    return deltas
