"""The reader side of the DuckDB file: reader connections and the threads that query.

Queries run on a pool of threads, each on a reader connection (a cursor of the
writer's database), concurrently with the writer. Every read first waits until DuckDB
holds each group acknowledged before it started (``wait_applied``), so an answer never
misses an acknowledged event. A pinned read holds one reader inside a transaction that
sees exactly the commits up to one seq: it starts under the commit lock, which the
applier holds while a commit becomes visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

import duckdb

from hypemeter.errors import StoreUnavailable

T = TypeVar("T")
Pin = tuple[duckdb.DuckDBPyConnection, int, int]


class ReaderPool:
    """``committed`` gives the last seq DuckDB committed (read under ``commit_lock``)."""

    def __init__(
        self,
        threads: int,
        *,
        commit_lock: threading.Lock,
        committed: Callable[[], int],
        wait_applied: Callable[[int], None],
    ) -> None:
        self._threads = threads
        self._commit_lock = commit_lock
        self._committed = committed
        self._wait_applied = wait_applied
        self._readers: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._count = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pins: asyncio.Semaphore | None = None

    def add(self, con: duckdb.DuckDBPyConnection) -> None:
        """A reader connection (one per thread), added when the file opens."""
        con.execute("SET TimeZone = 'UTC'")
        self._readers.put(con)
        self._count += 1

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=self._threads, thread_name_prefix="hypemeter-query"
        )

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        while self._count:
            self._readers.get().close()
            self._count -= 1

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        return self._pool

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T], acked: int) -> T:
        """``fn`` on a reader, once DuckDB holds every group up to ``acked``."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor(), self._read, fn, acked
        )

    def _read(self, fn: Callable[[duckdb.DuckDBPyConnection], T], acked: int) -> T:
        self._wait_applied(acked)
        con = self._readers.get()
        try:
            return fn(con)
        finally:
            self._readers.put(con)

    @asynccontextmanager
    async def pinned(self, acked: int) -> AsyncIterator[Pin]:
        """(connection, seq, rollup watermark) of a transaction that sees exactly the
        commits up to ``seq`` (at least ``acked``); rolled back at the end."""
        pool = self._executor()
        if self._pins is None:
            # Pinned views hold a reader across awaits: leave readers for plain queries.
            self._pins = asyncio.Semaphore(max(1, self._threads // 2))
        loop = asyncio.get_running_loop()
        async with self._pins:
            pin = await loop.run_in_executor(pool, self._pin, acked)
            try:
                yield pin
            finally:
                await loop.run_in_executor(pool, self._unpin, pin[0])

    def _pin(self, acked: int) -> Pin:
        self._wait_applied(acked)
        con = self._readers.get()
        try:
            # DuckDB takes a transaction's snapshot when it first reads the database.
            with self._commit_lock:
                seq = self._committed()
                con.execute("BEGIN TRANSACTION")
                rows = con.execute(
                    "SELECT coalesce(max(value::BIGINT), 0) FROM meta WHERE key = 'rollup_seq'"
                ).fetchall()
        except BaseException:
            self._readers.put(con)
            raise
        return con, seq, int(rows[0][0])

    def _unpin(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            con.execute("ROLLBACK")
        finally:
            self._readers.put(con)

    async def read_on(
        self, con: duckdb.DuckDBPyConnection, fn: Callable[[duckdb.DuckDBPyConnection], T]
    ) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, con)

    @contextlib.contextmanager
    def held(self, timeout_s: float) -> Iterator[bool]:
        """Every reader held (no query runs) for the block, waiting at most ``timeout_s``
        for running queries; yields whether all were had."""
        deadline = time.monotonic() + timeout_s
        taken: list[duckdb.DuckDBPyConnection] = []
        try:
            while len(taken) < self._count:
                taken.append(self._readers.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            pass
        try:
            yield len(taken) == self._count
        finally:
            for reader in taken:
                self._readers.put(reader)
