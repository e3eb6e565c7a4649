"""The embedded store: one DuckDB file holding events, tenants, keys and state.

DuckDB is synchronous and admits one writing process, so a single writer
thread owns the connection and the event loop never blocks on it. Appends that
queue up during a commit are committed together (group commit): one fsync
acknowledges many requests, and every per-event step of the commit (hashing,
filtering, inserting) runs in bulk inside DuckDB or numpy.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from hypemeter.backends.embedded.duckdb_store.schema import EVENT_COLUMNS, FINGERPRINT_SQL, migrate
from hypemeter.backends.embedded.duckdb_store.snapshots import SnapshotKey, SnapshotState
from hypemeter.backends.embedded.duckdb_store.writer import Append, WriterThread
from hypemeter.backends.embedded.fingerprints import FingerprintIndex, Fingerprints
from hypemeter.backends.ports import AppendResult
from hypemeter.clock import Clock
from hypemeter.errors import StoreUnavailable
from hypemeter.events.model import EventBatch, Reading

log = logging.getLogger("hypemeter.store")
T = TypeVar("T")
SNAPSHOT_CACHE = 200_000
RESTORE_CHUNK = 250_000
# Fewer, larger checkpoints: each one rewrites table blocks and stalls commits.
CHECKPOINT_THRESHOLD = "128MB"
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


class DuckDBDatabase:
    """The DuckDB file and its writer thread, shared by the embedded store adapters."""

    def __init__(self, path: Path, *, clock: Clock, config: StoreConfig) -> None:
        self.path = path
        self._clock = clock
        self._config = config
        self._index = FingerprintIndex(
            window_us=config.dedup_window_us,
            memory_entries=config.dedup_memory_entries,
            spill_dir=path.parent / f"{path.stem}.dedup",
        )
        self._snapshots = SnapshotState(SNAPSHOT_CACHE)
        self._seq = 0
        self._writer = WriterThread(
            self._connect,
            self._commit,
            queue_limit=config.queue_limit,
            commit_max_events=config.commit_max_events,
        )
        self._users = 0

    @property
    def index(self) -> FingerprintIndex:
        return self._index

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

    def stop(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0:
            self._writer.stop()
            self._index.close()

    async def run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        if not self._users:
            raise StoreUnavailable("the store is closed")
        return await self._writer.call(fn)

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        if not self._users:
            raise StoreUnavailable("the store is closed")
        result: AppendResult = await self._writer.append(tenant_id, batch, len(batch))
        return result

    def queue_depth(self) -> int:
        return self._writer.pending_events

    def size_bytes(self) -> int:
        total = 0
        for candidate in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                total += candidate.stat().st_size
        return total

    # -- on the writer thread ------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(self.path), config={"memory_limit": self._config.memory_limit})
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        migrate(con)
        rows = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchall()
        self._seq = int(rows[0][0])
        if self._config.restore_dedup:
            self._restore_index(con)
            self._snapshots.warm(con)
        return con

    def _restore_index(self, con: duckdb.DuckDBPyConnection) -> None:
        started = time.perf_counter()
        horizon = self._clock.now_us() - self._config.dedup_window_us
        reader = con.sql(
            "SELECT fp_hi, fp_lo, epoch_us(ingested_at) AS at FROM events "
            "WHERE fp_hi IS NOT NULL AND ingested_at >= make_timestamptz($horizon::BIGINT) "
            "ORDER BY seq",
            params={"horizon": horizon},
        ).to_arrow_reader(RESTORE_CHUNK)
        restored = 0
        for chunk in reader:
            hi = chunk.column(0).to_numpy().astype(np.uint64)
            lo = chunk.column(1).to_numpy().astype(np.uint64)
            newest = int(chunk.column(2).to_numpy().max())
            self._index.add(Fingerprints.from_halves(hi, lo), newest)
            restored += len(hi)
        log.info(
            "dedup index restored",
            extra={"event_ids": restored, "seconds": round(time.perf_counter() - started, 3)},
        )

    def _commit(self, con: duckdb.DuckDBPyConnection, jobs: list[Append]) -> list[AppendResult]:
        """Deduplicate, derive snapshot deltas and insert every job in one transaction."""
        now_us = self._clock.now_us()
        seq = self._seq + 1
        incoming, has_id = _incoming(jobs)
        con.register("incoming", incoming)
        try:
            halves = con.execute(FINGERPRINT_SQL).fetchnumpy()
        finally:
            con.unregister("incoming")
        fps = Fingerprints.from_halves(
            np.asarray(halves["hi"], dtype=np.uint64), np.asarray(halves["lo"], dtype=np.uint64)
        )
        keep = self._dedup(fps, has_id)
        deltas = self._deltas(con, jobs, keep)
        staged = incoming.append_column("fp_hi", pa.array(fps.hi, mask=~has_id))
        staged = staged.append_column("fp_lo", pa.array(fps.lo, mask=~has_id))
        staged = staged.append_column("delta", pa.array(deltas, pa.float64()))
        mask = np.asarray(keep, dtype=np.bool_)
        if not mask.all():
            staged = staged.filter(pa.array(mask))
        try:
            self._write(con, staged, seq, now_us)
        except Exception:
            self._snapshots.rolled_back()
            raise
        self._seq = seq
        self._snapshots.committed()
        kept_ids = np.flatnonzero(mask & has_id)
        self._index.add(fps.take(kept_ids.tolist()), now_us)
        self._index.expire(now_us)
        results: list[AppendResult] = []
        offset = 0
        for job in jobs:
            size = len(job.batch)
            accepted = int(mask[offset : offset + size].sum())
            results.append(AppendResult(accepted, size - accepted, seq))
            offset += size
        return results

    def _write(
        self, con: duckdb.DuckDBPyConnection, staged: pa.Table, seq: int, now_us: int
    ) -> None:
        con.execute("BEGIN TRANSACTION")
        try:
            if staged.num_rows:
                con.register("staged", staged)
                try:
                    con.execute(
                        f"INSERT INTO events ({EVENT_COLUMNS}, seq, ingested_at) "  # noqa: S608
                        f"SELECT {EVENT_COLUMNS}, ?, make_timestamptz(?::BIGINT) FROM staged",
                        [seq, now_us],
                    )
                finally:
                    con.unregister("staged")
            self._snapshots.save(con)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    def _dedup(self, fps: Fingerprints, has_id: npt.NDArray[np.bool_]) -> list[bool]:
        """Keep mask: an id already in the window, or earlier in this group, is a duplicate."""
        seen = self._index.seen(fps).tolist()
        ints = fps.ints
        group: set[int] = set()
        keep = [True] * len(ints)
        for i in np.flatnonzero(has_id).tolist():
            fp = ints[i]
            if seen[i] or fp in group:
                keep[i] = False
            else:
                group.add(fp)
        return keep

    def _deltas(
        self, con: duckdb.DuckDBPyConnection, jobs: list[Append], keep: list[bool]
    ) -> list[float]:
        deltas: list[float] = []
        keys: list[SnapshotKey] = []
        readings: list[Reading] = []
        rows: list[int] = []
        for job in jobs:
            batch: EventBatch = job.batch
            offset = len(deltas)
            deltas.extend(batch.value)
            for i, kind in enumerate(batch.kind):
                if kind != "snapshot" or not keep[offset + i]:
                    continue
                rows.append(offset + i)
                keys.append(
                    (
                        job.tenant_id,
                        batch.influencer_id[i],
                        batch.platform[i],
                        batch.content_id[i] or "",
                        batch.metric[i],
                    )
                )
                readings.append(Reading(batch.ts_us[i], batch.value[i]))
        if rows:
            for row, delta in zip(rows, self._snapshots.apply(con, keys, readings), strict=True):
                deltas[row] = delta
        return deltas


def _incoming(jobs: list[Append]) -> tuple[pa.Table, npt.NDArray[np.bool_]]:
    """All jobs' events as one Arrow table, and which carry a client-given event id."""
    tables: list[pa.Table] = []
    flags: list[npt.NDArray[np.bool_]] = []
    for job in jobs:
        table, has_id = _to_arrow(job.tenant_id, job.batch)
        tables.append(table)
        flags.append(has_id)
    if len(tables) == 1:
        return tables[0], flags[0]
    return pa.concat_tables(tables), np.concatenate(flags)


def _to_arrow(tenant_id: str, batch: EventBatch) -> tuple[pa.Table, npt.NDArray[np.bool_]]:
    n = len(batch)
    ids = batch.event_id
    has_id = np.fromiter((e is not None for e in ids), dtype=np.bool_, count=n)
    if not has_id.all():
        # Server-assigned ids: unique by construction, never deduplicated.
        prefix = f"s{secrets.token_hex(12)}-"
        ids = [e if e is not None else f"{prefix}{i}" for i, e in enumerate(ids)]
    table = pa.table(
        {
            "tenant_id": pa.repeat(pa.scalar(tenant_id, _STR), n),
            "event_id": pa.array(ids, _STR),
            "influencer_id": pa.array(batch.influencer_id, _STR),
            "platform": pa.array(batch.platform, _STR),
            "content_id": pa.array(batch.content_id, _STR),
            "campaign_id": pa.array(batch.campaign_id, _STR),
            "metric": pa.array(batch.metric, _STR),
            "kind": pa.array(batch.kind, _STR),
            "value": pa.array(batch.value, pa.float64()),
            "ts": pa.array(batch.ts_us, pa.int64()).cast(_TS),
            "user_id": pa.array(batch.user_id, _STR),
            "text": pa.array(batch.text, _STR),
            "tags": pa.array(batch.tags, pa.list_(_STR)),
            "variant": pa.array(batch.variant, _STR),
            "properties": pa.array(batch.properties, _STR),
        }
    )
    return table, has_id
