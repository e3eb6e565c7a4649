"""The PostgreSQL store's connections and its write path.

Appends queue up while a commit runs and are committed together (group
commit), each group in one transaction (``postgres_commit``) that claims the
event ids (exact deduplication, forever), turns snapshot readings into deltas
under row locks, copies the events into their partition and merges the group's
rollup rows. Several processes may write at once: all locks are taken in key
order, and a transaction that still meets a deadlock or a serialization failure
is retried whole.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import numpy as np

from hypemeter.backends.cluster import postgres_schema as schema
from hypemeter.backends.cluster.postgres_commit import Group, commit, prepare_connection
from hypemeter.backends.dsn import redacted, split_param
from hypemeter.clock import Clock
from hypemeter.errors import InvalidInput, Overloaded, StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.ports import AppendResult

log = logging.getLogger("hypemeter.store")
T = TypeVar("T")
COMMIT_ATTEMPTS = 6
SIZE_REFRESH_SECONDS = 10.0
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection cut in the middle of a statement, say
    asyncio.TimeoutError,
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
                init=prepare_connection,
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
        staged = Group.of([(job.tenant_id, job.batch, job.size) for job in group])
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

    async def _commit(self, con: asyncpg.Connection, group: Group) -> list[AppendResult]:
        keep, deltas, seq = await commit(con, group, self._clock.now_us())
        return group.results(keep, deltas, seq, self._clock.now_us())


def _is_connection_error(exc: asyncpg.PostgresError) -> bool:
    state = getattr(exc, "sqlstate", "") or ""
    # Class 08: connection exceptions; 57P0x: the server is shutting down or restarted.
    return state.startswith("08") or state.startswith("57P")
