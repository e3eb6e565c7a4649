"""The embedded store: one DuckDB file holding events, tenants, keys and state.

DuckDB is synchronous and admits one writing process, so a single writer
thread owns the connection and the event loop never blocks on it. Appends that
queue up during a commit are committed together (group commit): one fsync of
the ingest journal acknowledges many requests, and every per-event step
(hashing, filtering, deriving deltas) runs in bulk in numpy or Arrow. The
applier thread then inserts the journaled groups into DuckDB; every read first
waits until DuckDB holds what was acknowledged before it started, so answers
are the same as if the ack had waited for DuckDB (``journal.py`` says why it
does not).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa

from hypemeter.backends.embedded.duckdb_store import retention, snapshots
from hypemeter.backends.embedded.duckdb_store.applier import Applier, Staged, stacked
from hypemeter.backends.embedded.duckdb_store.commit import GroupCommit
from hypemeter.backends.embedded.duckdb_store.erasure import (
    erase_influencer,
    rewrite,
    rewrite_due,
)
from hypemeter.backends.embedded.duckdb_store.file_log import FileEventLog
from hypemeter.backends.embedded.duckdb_store.queries import Horizon
from hypemeter.backends.embedded.duckdb_store.readers import ReaderPool
from hypemeter.backends.embedded.duckdb_store.rollups import RollupMaintainer
from hypemeter.backends.embedded.duckdb_store.schema import EVENT_COLUMNS, migrate
from hypemeter.backends.embedded.duckdb_store.snapshots import SnapshotState
from hypemeter.backends.embedded.duckdb_store.startup import replay_log, restore_index
from hypemeter.backends.embedded.duckdb_store.writer import WriterThread
from hypemeter.backends.embedded.fingerprints import FingerprintIndex
from hypemeter.clock import Clock
from hypemeter.datadir import private_data_dir, private_dir, restrict_umask, tighten
from hypemeter.errors import StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.ports import AppendResult

log = logging.getLogger("hypemeter.store")
T = TypeVar("T")
SNAPSHOT_CACHE = 200_000
# Fewer, larger checkpoints: each one rewrites table blocks and stalls commits.
CHECKPOINT_THRESHOLD = "128MB"
# How long the checkpoint after an erasure waits for running queries to finish.
RECLAIM_WAIT_SECONDS = 10.0
_TS = pa.timestamp("us", tz="UTC")
_STR = pa.string()


@dataclass(frozen=True, slots=True)
class StoreConfig:
    dedup_window_us: int
    dedup_memory_entries: int
    queue_limit: int
    commit_max_events: int
    memory_limit: str = "1GB"
    restore_dedup: bool = True
    query_threads: int = 4
    fold_interval: float = 0.5
    compact_min_rows: int = 200_000
    maintain_rollups: bool = True


class DuckDBDatabase:
    """The DuckDB file and its writer thread, shared by the embedded store adapters."""

    def __init__(
        self, path: Path, *, clock: Clock, config: StoreConfig, data_dir: Path | None = None
    ) -> None:
        self.path = path
        spill_dir = path.parent / f"{path.stem}.dedup"
        journal_dir = path.parent / f"{path.stem}.journal"
        # Before anything is created: the directory 0700 (when it is the data directory
        # or new: one of the user's keeps its mode), the store's own files 0600, and a
        # umask that keeps what DuckDB creates later (its WAL, temp files) private.
        if data_dir is not None and path.parent.resolve() == data_dir.resolve():
            private_data_dir(path.parent, store_stem=path.stem)
        else:
            private_dir(path.parent)
        restrict_umask()
        wal, temp = (path.with_name(path.name + suffix) for suffix in (".wal", ".tmp"))
        tighten((path, wal, temp, journal_dir, spill_dir))
        self._clock = clock
        self._config = config
        self._index = FingerprintIndex(
            window_us=config.dedup_window_us,
            memory_entries=config.dedup_memory_entries,
            spill_dir=spill_dir,
        )
        self._snapshots = SnapshotState(SNAPSHOT_CACHE)
        self._log = FileEventLog(journal_dir, clock)
        self._group = GroupCommit(
            clock=clock, index=self._index, snapshots=self._snapshots, log=self._log
        )
        self._applier: Applier | None = None
        self._apply_con: duckdb.DuckDBPyConnection | None = None
        # The last group DuckDB committed (``_group.acked``: the last one journaled).
        self._seq = 0
        # Held while a commit becomes visible and ``_seq`` follows it, and while a
        # pinned read starts its snapshot: the pinned snapshot is exactly ``_seq``.
        self._commit_lock = threading.Lock()
        self._writer = WriterThread(
            self._connect,
            self._group.commit,
            queue_limit=config.queue_limit,
            commit_max_events=config.commit_max_events,
            barrier=self._drain,
            closing=self._close_applier,
        )
        self._users = 0
        self._readers = ReaderPool(
            config.query_threads,
            commit_lock=self._commit_lock,
            committed=lambda: self._seq,
            wait_applied=self._wait_applied,
        )
        self.maintainer: RollupMaintainer | None = None
        # Bumped whenever stored events change without a commit (an erasure, a purge):
        # copies of the rollups made before (the query caches) are stale.
        self.rewrites = 0
        self._maintenance_con: duckdb.DuckDBPyConnection | None = None

    def start(self) -> None:
        """Open the file (creating it), migrate, and rebuild the dedup index.

        Each adapter starts and stops the shared database; the last stop closes it.
        """
        self._users += 1
        if self._users > 1:
            return
        try:
            self._writer.start()
        except duckdb.Error as exc:
            self._users = 0
            raise StoreUnavailable(f"cannot open the store {self.path}: {exc}") from exc
        self._readers.start()
        if self.maintainer is not None:
            self.maintainer.start()

    def stop(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0:
            if self.maintainer is not None:
                self.maintainer.stop()
            self._readers.stop()
            if self._maintenance_con is not None:
                self._maintenance_con.close()
            self._writer.stop()
            self._index.close()

    def horizon(self) -> Horizon:
        """How far the rollups are known to be folded, read before a query starts."""
        committed = self._seq
        folded = self.maintainer.folded_seq if self.maintainer is not None else 0
        return Horizon(folded, committed <= folded, committed)

    def now_us(self) -> int:
        return self._clock.now_us()

    async def read(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run a read-only query on a reader connection, concurrently with the writer.

        It sees at least every event acknowledged before the call.
        """
        if not self._users:
            raise StoreUnavailable("the store is closed")
        return await self._readers.read(fn, self._group.acked)

    def applied(self) -> bool:
        """Whether DuckDB holds every acknowledged group."""
        return self._seq >= self._group.acked

    def wait_applied(self) -> None:
        """Block until DuckDB holds every group acknowledged so far."""
        self._wait_applied(self._group.acked)

    def _wait_applied(self, acked: int) -> None:
        if self._applier is not None:
            self._applier.wait_applied(acked)

    def _drain(self) -> None:
        if self._applier is not None:
            self._applier.drain()

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[tuple[duckdb.DuckDBPyConnection, int, Horizon]]:
        """A reader connection inside a transaction that sees exactly commits up to ``seq``.

        Yields (connection, seq, horizon); run queries on the connection through
        ``read_on``, one at a time. The transaction is rolled back at the end.
        """
        if not self._users:
            raise StoreUnavailable("the store is closed")
        async with self._readers.pinned(self._group.acked) as (con, seq, watermark):
            yield con, seq, Horizon(watermark, seq <= watermark, seq)

    async def read_on(
        self, con: duckdb.DuckDBPyConnection, fn: Callable[[duckdb.DuckDBPyConnection], T]
    ) -> T:
        return await self._readers.read_on(con, fn)

    async def run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        if not self._users:
            raise StoreUnavailable("the store is closed")
        return await self._writer.call(fn)

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        if not self._users:
            raise StoreUnavailable("the store is closed")
        result: AppendResult = await self._writer.append(tenant_id, batch, len(batch))
        return result

    async def erase_influencer(self, tenant_id: str, influencer_id: str) -> int:
        """Delete one influencer's events, rollups and snapshot state; events erased."""
        return await self.run(lambda con: self._erase(con, tenant_id, influencer_id))

    def folds_paused(self) -> contextlib.AbstractContextManager[object]:
        """Hold the rollup maintainer between two steps (for work that rewrites rollups)."""
        return self.maintainer.lock if self.maintainer is not None else contextlib.nullcontext()

    def _erase(self, con: duckdb.DuckDBPyConnection, tenant_id: str, influencer_id: str) -> int:
        with self.folds_paused():
            erased = erase_influencer(con, tenant_id, influencer_id)
            self._snapshots.forget(tenant_id, influencer_id)
            self.rewrites += 1
        # Every acknowledged group is in DuckDB (this runs behind the writer's barrier):
        # the journal's copies of the erased events go too.
        self._log.purge()
        if self.maintainer is not None:
            self.maintainer.notify()
        return erased

    async def expired_days(self, cutoff_us: int) -> list[tuple[str, int, int]]:
        """(tenant, day start, events) of the days a purge up to ``cutoff_us`` deletes from."""
        return await self.read(lambda con: retention.expired_days(con, cutoff_us))

    async def purge_day(self, tenant_id: str, day_us: int, cutoff_us: int) -> int:
        """Delete one tenant's events of one day past the retention (``retention.py``)."""
        return await self.run(lambda con: self._purge_day(con, tenant_id, day_us, cutoff_us))

    def _purge_day(
        self, con: duckdb.DuckDBPyConnection, tenant_id: str, day_us: int, cutoff_us: int
    ) -> int:
        with self.folds_paused():
            purged = retention.purge_day(con, tenant_id, day_us, cutoff_us)
            if purged:
                self.rewrites += 1
        if purged and self.maintainer is not None:
            self.maintainer.notify()
        return purged

    async def reclaim(self) -> None:
        """Checkpoint: the WAL's copies of deleted rows go, and rows deleted before the
        checkpoint are not written into the file. (A transaction that began before a
        deletion keeps the rows it may still read; the checkpoint would write those into
        the file, so it waits a moment for running queries. Rows already in the file stay
        there, in blocks DuckDB does not clear, until the rewrite at the next start.)"""
        await self.run(self._checkpoint)

    def _checkpoint(self, con: duckdb.DuckDBPyConnection) -> None:
        with self._readers.held(RECLAIM_WAIT_SECONDS) as idle:
            if not idle:
                log.warning("checkpoint after an erasure while queries still run")
            with self.folds_paused():
                con.execute("CHECKPOINT")

    def queue_depth(self) -> int:
        """Events waiting for their acknowledgement (not those waiting for DuckDB)."""
        return self._writer.pending_events

    def size_bytes(self) -> int:
        total = self._log.size_bytes()
        for candidate in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                total += candidate.stat().st_size
        return total

    # -- on the writer thread ------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        private_dir(self.path.parent)
        con = self._open_file()
        migrate(con)
        if rewrite_due(con):
            con.close()
            rewrite(self.path)
            con = self._open_file()
        self._seq = self._group.acked = self._replay(con)
        for _ in range(self._config.query_threads):
            self._readers.add(con.cursor())
        if self._config.maintain_rollups:
            self._maintenance_con = con.cursor()
            self._maintenance_con.execute("SET TimeZone = 'UTC'")
            self.maintainer = RollupMaintainer(
                self._maintenance_con,
                fold_interval=self._config.fold_interval,
                compact_min_rows=self._config.compact_min_rows,
            )
        if self._config.restore_dedup:
            restore_index(con, self._index, self._clock.now_us() - self._config.dedup_window_us)
            self._snapshots.warm(con)
        self._apply_con = con.cursor()
        self._apply_con.execute("SET TimeZone = 'UTC'")
        apply_con = self._apply_con
        self._applier = Applier(
            lambda batch: self._apply(apply_con, batch),
            limit=self._config.queue_limit,
            batch_events=self._config.commit_max_events,
            applied=self._seq,
        )
        self._applier.start()
        self._group.applier = self._applier
        return con

    def _open_file(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(self.path), config={"memory_limit": self._config.memory_limit})
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        return con

    def _replay(self, con: duckdb.DuckDBPyConnection) -> int:
        """Insert what the log holds beyond DuckDB's last group; that group's seq."""
        return replay_log(con, self._log, self._insert)

    def _close_applier(self) -> None:
        """On the writer thread, before it closes the connection."""
        if self._applier is not None:
            self._applier.stop()
            self._applier = None
            self._group.applier = None
        if self._apply_con is not None:
            self._apply_con.close()
            self._apply_con = None
        self._log.close()

    def _apply(self, con: duckdb.DuckDBPyConnection, batch: list[Staged]) -> None:
        """On the applier thread: commit journaled groups, then let the journal go."""
        last = self._insert(con, batch)
        self._log.release(last)
        self._log.prepare()
        for staged in batch:
            if staged.snapshots is not None:
                self._snapshots.saved(staged.snapshots)
        if self.maintainer is not None:
            self.maintainer.notify()

    def _insert(self, con: duckdb.DuckDBPyConnection, batch: list[Staged]) -> int:
        """Insert groups in one transaction and make them visible; the last seq."""
        last = batch[-1].seq
        con.execute("BEGIN TRANSACTION")
        try:
            for rows in stacked(batch):
                con.register("staged", rows)
                try:
                    con.execute(
                        f"INSERT INTO events ({EVENT_COLUMNS}, seq, ingested_at) "  # noqa: S608
                        f"SELECT {EVENT_COLUMNS}, seq, make_timestamptz(ingested_us) FROM staged"
                    )
                finally:
                    con.unregister("staged")
            for staged in batch:
                if staged.snapshots is not None:
                    snapshots.write(con, staged.snapshots, staged.seq)
            con.execute("INSERT OR REPLACE INTO meta VALUES ('journal_seq', ?)", [str(last)])
            with self._commit_lock:
                con.execute("COMMIT")
                self._seq = last
        except Exception:
            con.execute("ROLLBACK")
            raise
        return last
