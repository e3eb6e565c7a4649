"""The group commit of the embedded store, on its writer thread.

Appends that queued up together become one group: their ids are deduplicated
against the window and each other, snapshots become deltas, and the group is
synced to the ingest journal before any of them is acknowledged; the applier
thread inserts it into DuckDB afterwards. Every per-event step runs in bulk
(numpy, Arrow) over the whole group: a group of many single-event requests
must cost about what one batch of as many events costs.
"""

from __future__ import annotations

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.backends.commit_group import group_table, kept_readings, per_append, with_deltas
from hypemeter.backends.embedded.duckdb_store.applier import Applier, Staged
from hypemeter.backends.embedded.duckdb_store.file_log import FileEventLog
from hypemeter.backends.embedded.duckdb_store.snapshots import SnapshotState
from hypemeter.backends.embedded.duckdb_store.writer import Append
from hypemeter.backends.embedded.fingerprints import FingerprintIndex, Fingerprints
from hypemeter.clock import Clock
from hypemeter.errors import StoreUnavailable
from hypemeter.events.batch import id_digest
from hypemeter.events.ports import AppendResult

U64 = npt.NDArray[np.uint64]


class GroupCommit:
    """Deduplicates, derives deltas and journals groups; ``acked`` is the last group's seq.

    Not thread-safe: only the writer thread commits (``acked`` may be read anywhere).
    """

    def __init__(
        self,
        *,
        clock: Clock,
        index: FingerprintIndex,
        snapshots: SnapshotState,
        log: FileEventLog,
    ) -> None:
        self._clock = clock
        self._index = index
        self._snapshots = snapshots
        self._log = log
        self.acked = 0
        self.applier: Applier | None = None  # set once the store is open

    def commit(self, con: duckdb.DuckDBPyConnection, jobs: list[Append]) -> list[AppendResult]:
        """Deduplicate, derive snapshot deltas and journal every job as one group."""
        now_us = self._clock.now_us()
        incoming, sizes = group_table([(job.tenant_id, job.batch) for job in jobs])
        incoming, fps, has_id = _fingerprinted(incoming, sizes, [job.tenant_id for job in jobs])
        keep = self._dedup(fps, has_id)
        rows, keys, readings = kept_readings(incoming, keep)
        deltas = self._snapshots.apply(con, keys, readings) if keys else []
        staged = with_deltas(incoming, keep, rows, deltas)
        seq = self._journaled(staged, now_us)
        committed_us = self._clock.now_us()  # when the events were acknowledged
        kept_ids = np.flatnonzero(keep & has_id)
        self._index.add(Fingerprints(fps.hi[kept_ids], fps.lo[kept_ids]), now_us)
        self._index.expire(now_us)
        return per_append(keep, sizes, staged, seq, committed_us)

    def _journaled(self, staged: pa.Table, now_us: int) -> int:
        """Make a group durable and hand it to the applier; its seq."""
        due = self._snapshots.due(now_us)
        if not staged.num_rows and due is None:
            self._snapshots.committed()
            return self.acked  # nothing to store: every event was a duplicate
        if self.applier is None:
            raise StoreUnavailable("the store is closed")
        self.applier.check()  # refuse before journaling what DuckDB could not take
        try:
            seq = self._log.write(staged, now_us)
        except Exception:
            self._snapshots.rolled_back()
            raise
        self._snapshots.committed()
        self.acked = seq
        self.applier.submit(Staged(seq, now_us, staged, due))
        return seq

    def _dedup(self, fps: Fingerprints, has_id: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Keep mask: an id already in the window, or earlier in this group, is a duplicate."""
        keep = ~has_id
        ids = np.flatnonzero(has_id)
        # Looked up in hi order: each run's binary searches then walk it forwards.
        ids = ids[np.argsort(fps.hi[ids], kind="stable")]
        seen = self._index.seen(Fingerprints(fps.hi[ids], fps.lo[ids]))
        candidates = np.sort(ids[~seen])
        keep[candidates[_first_occurrences(fps.hi[candidates], fps.lo[candidates])]] = True
        return keep


def _first_occurrences(hi: U64, lo: U64) -> npt.NDArray[np.intp]:
    """Positions of the first occurrence of each distinct (hi, lo), in input order."""
    order = np.argsort(hi, kind="stable")
    sorted_hi, sorted_lo = hi[order], lo[order]
    same_hi = sorted_hi[1:] == sorted_hi[:-1]
    same = same_hi & (sorted_lo[1:] == sorted_lo[:-1])
    if (same_hi & ~same).any():
        # Two fingerprints share a hi word: equal pairs need not be adjacent.
        pairs = np.empty(len(hi), dtype=[("hi", "<u8"), ("lo", "<u8")])
        pairs["hi"], pairs["lo"] = hi, lo
        return np.sort(np.unique(pairs, return_index=True)[1])
    first = np.ones(len(hi), dtype=np.bool_)
    first[1:] = ~same
    return np.sort(order[first])


def _words(table: pa.Table, name: str) -> U64:
    column = pc.fill_null(table.column(name), 0)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.uint64)


def _fingerprinted(
    table: pa.Table, sizes: list[int], tenants: list[str]
) -> tuple[pa.Table, Fingerprints, npt.NDArray[np.bool_]]:
    """The group table with each id's fingerprint folded with its tenant (see
    ``fingerprint``), the fingerprints, and which rows have an id; rows without an id get
    a null fingerprint in the table (their words here mean nothing)."""
    words = np.stack([np.frombuffer(id_digest(t), dtype="<u8") for t in tenants])
    per_row = np.repeat(words.astype(np.uint64), sizes, axis=0)
    has_id = table.column("has_id").to_numpy(zero_copy_only=False).astype(np.bool_)
    no_id = ~has_id
    folded: list[U64] = []
    for name, word in (("fp_hi", 1), ("fp_lo", 0)):
        values = np.bitwise_xor(_words(table, name), per_row[:, word])
        at = table.schema.get_field_index(name)
        table = table.set_column(at, name, pa.array(values, mask=no_id))
        folded.append(values)
    return table, Fingerprints(folded[0], folded[1]), has_id
