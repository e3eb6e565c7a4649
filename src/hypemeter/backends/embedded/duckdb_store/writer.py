"""One thread owns the DuckDB connection; every write goes through it.

Appends that queue up while a commit runs are committed together (group
commit): one fsync acknowledges many requests.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import duckdb

from hypemeter.errors import Overloaded, StoreUnavailable

log = logging.getLogger("hypemeter.store")
T = TypeVar("T")


@dataclass(slots=True)
class Call:
    """Run ``fn(connection)`` on the writer thread."""

    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class Append:
    tenant_id: str
    batch: Any
    future: asyncio.Future[Any]
    size: int = field(default=0)


class _Stop:
    pass


Job = Call | Append | _Stop


def resolve(
    future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None
) -> None:
    """Complete a future from the writer thread, on its own loop."""
    resolve_all([(future, value, error)])


Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


def resolve_all(outcomes: list[Outcome]) -> None:
    """Complete futures from the writer thread: one wake-up of each loop for all of its
    futures (a group commit of many single-event requests answers them all at once)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, mine in by_loop.items():
        try:
            loop.call_soon_threadsafe(_complete, mine)
        except RuntimeError:
            # The caller's loop is gone (it was shut down mid-request): nobody awaits this.
            log.warning("dropped the answer of a request whose event loop has closed")


def _complete(outcomes: list[Outcome]) -> None:
    for future, value, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class WriterThread:
    """Serialises DuckDB work on one thread and batches appends into group commits."""

    def __init__(
        self,
        connect: Callable[[], duckdb.DuckDBPyConnection],
        commit: Callable[[duckdb.DuckDBPyConnection, list[Append]], list[Any]],
        *,
        queue_limit: int,
        commit_max_events: int,
        barrier: Callable[[], None] | None = None,
        closing: Callable[[], None] | None = None,
    ) -> None:
        self._connect = connect
        self._commit = commit
        # Run before each Call (so it sees every acknowledged append) and before closing.
        self._barrier = barrier
        self._closing = closing
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._queue_limit = queue_limit
        self._commit_max = commit_max_events
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="hypemeter-duckdb", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.connection: duckdb.DuckDBPyConnection | None = None

    @property
    def pending_events(self) -> int:
        return self._pending

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_Stop())
            self._thread.join()

    async def call(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(Call(fn, future))
        return await future

    async def append(self, tenant_id: str, batch: Any, size: int) -> Any:
        with self._lock:
            if self._pending and self._pending + size > self._queue_limit:
                raise Overloaded.queue_full(self._pending, self._queue_limit)
            self._pending += size
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put(Append(tenant_id, batch, future, size))
        return await future

    def _run(self) -> None:
        try:
            self.connection = self._connect()
        except BaseException as exc:  # surfaced to start()
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        stopping = False
        while not stopping:
            jobs = [self._queue.get()]
            jobs.extend(self._drain())
            stopping = self._process(jobs)
        if self._closing is not None:
            self._closing()
        self.connection.close()

    def _drain(self) -> list[Job]:
        jobs: list[Job] = []
        events = 0
        while events < self._commit_max:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            jobs.append(job)
            if isinstance(job, Append):
                events += job.size
        return jobs

    def _process(self, jobs: list[Job]) -> bool:
        assert self.connection is not None
        appends: list[Append] = []
        stopping = False
        for job in jobs:
            if isinstance(job, Append):
                appends.append(job)
                continue
            self._flush(appends)
            appends = []
            if isinstance(job, _Stop):
                stopping = True
            else:
                self._run_call(job)
        self._flush(appends)
        return stopping

    def _run_call(self, job: Call) -> None:
        assert self.connection is not None
        try:
            if self._barrier is not None:
                self._barrier()
            resolve(job.future, job.fn(self.connection))
        except Exception as exc:
            resolve(job.future, error=exc)

    def _flush(self, appends: list[Append]) -> None:
        """Commit a group; its events stop counting as queued before anyone hears back."""
        if not appends:
            return
        assert self.connection is not None
        try:
            results = self._commit(self.connection, appends)
        except Exception as exc:
            log.exception("group commit of %d requests failed", len(appends))
            self._release(appends)
            message = f"the store could not commit: {exc}"
            resolve_all([(job.future, None, StoreUnavailable(message)) for job in appends])
            return
        self._release(appends)
        resolve_all(
            [(job.future, result, None) for job, result in zip(appends, results, strict=True)]
        )

    def _release(self, appends: list[Append]) -> None:
        with self._lock:
            self._pending -= sum(job.size for job in appends)
