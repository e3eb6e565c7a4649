"""The last reading per snapshot key, used to turn snapshots into deltas."""

from __future__ import annotations

import queue
from collections import OrderedDict

import duckdb
import pyarrow as pa

from hypemeter.backends.commit_group import SeriesKey, fold_readings
from hypemeter.backends.embedded.duckdb_store.schema import SNAPSHOT_COLUMNS
from hypemeter.events.model import Reading

SnapshotKey = SeriesKey
KEY_COLUMNS = ("tenant_id", "influencer_id", "platform", "content_id", "metric")
_STR = pa.string()
FLUSH_EVERY_US = 1_000_000
FLUSH_KEYS = 10_000


class SnapshotState:
    """A bounded cache of readings over the ``snapshot_state`` table.

    Changes of one group commit are staged in an overlay and merged into the
    cache only after the group is journaled. The table is written lazily (``due``
    decides when, ``write`` does it on the applier thread), with the last event
    ``seq`` it covers; at start-up the snapshot events after that seq are
    replayed, so the raw events stay the source of truth. Owned by the writer
    thread, except ``write`` and ``saved``.
    """

    def __init__(self, capacity: int, *, flush_every_us: int = FLUSH_EVERY_US) -> None:
        self._capacity = capacity
        self._cache: OrderedDict[SnapshotKey, Reading] = OrderedDict()
        # True while every stored reading is cached: a miss then needs no query.
        self._complete = False
        self.overlay: dict[SnapshotKey, Reading] = {}
        # Committed readings the table does not have yet; never evicted from the cache.
        self._dirty: dict[SnapshotKey, Reading] = {}
        self._flush_every_us = flush_every_us
        self._flushed_at_us = 0
        # Readings the applier thread has written to the table, for ``_settle``.
        self._saved: queue.SimpleQueue[dict[SnapshotKey, Reading]] = queue.SimpleQueue()

    def warm(self, con: duckdb.DuckDBPyConnection) -> None:
        """Load the table (when it fits) and replay snapshot events it does not cover."""
        rows = con.execute("SELECT count(*) FROM snapshot_state").fetchall()
        if int(rows[0][0]) <= self._capacity:
            for r in con.execute(f"SELECT {SNAPSHOT_COLUMNS} FROM snapshot_state").fetchall():  # noqa: S608
                self._cache[(r[0], r[1], r[2], r[3], r[4])] = Reading(r[5], r[6])
            self._complete = True
        covered = con.execute(
            "SELECT coalesce(max(value::BIGINT), 0) FROM meta WHERE key = 'snapshot_seq'"
        ).fetchall()[0][0]
        replay = con.execute(
            "SELECT tenant_id, influencer_id, platform, coalesce(content_id, ''), metric, "
            "epoch_us(ts), value FROM events WHERE kind = 'snapshot' AND seq > ? "
            "ORDER BY seq, rowid",
            [covered],
        ).fetchall()
        keys: list[SnapshotKey] = [(r[0], r[1], r[2], r[3], r[4]) for r in replay]
        self.apply(con, keys, [Reading(r[5], r[6]) for r in replay])
        self.committed()

    def apply(
        self, con: duckdb.DuckDBPyConnection, keys: list[SnapshotKey], readings: list[Reading]
    ) -> list[float]:
        """Deltas of these readings, in order, staging the new state in the overlay."""
        self._load(con, [k for k in keys if k not in self.overlay])
        deltas, states = fold_readings(
            keys, readings, lambda key: self.overlay.get(key) or self._cache.get(key)
        )
        self.overlay.update(states)
        return deltas

    def due(self, now_us: int) -> dict[SnapshotKey, Reading] | None:
        """The readings the table lacks, when it is time to write them (with this group).

        Writing every group would cost an upsert per commit; a crash in between is
        covered by the replay in ``warm``.
        """
        self._settle()
        pending = {**self._dirty, **self.overlay}
        due = now_us - self._flushed_at_us >= self._flush_every_us or len(pending) >= FLUSH_KEYS
        if not pending or not due:
            return None
        self._flushed_at_us = now_us
        return pending

    def saved(self, readings: dict[SnapshotKey, Reading]) -> None:
        """The table now holds these readings (called on the thread that committed them)."""
        self._saved.put(readings)

    def committed(self) -> None:
        self._dirty.update(self.overlay)
        for key, reading in self.overlay.items():
            self._cache[key] = reading
            self._cache.move_to_end(key)
        self.overlay = {}
        self._trim()

    def forget(self, tenant_id: str, influencer_id: str) -> None:
        """Drop one influencer's readings (their events were erased; the caller deleted
        their rows of the table)."""
        for held in (self._cache, self._dirty, self.overlay):
            for key in [k for k in held if k[0] == tenant_id and k[1] == influencer_id]:
                del held[key]

    def rolled_back(self) -> None:
        self.overlay = {}

    def _settle(self) -> None:
        """Readings the table now holds stop being dirty (unless a newer one came since)."""
        while True:
            try:
                readings = self._saved.get_nowait()
            except queue.Empty:
                return
            for key, reading in readings.items():
                if self._dirty.get(key) == reading:
                    del self._dirty[key]

    def _load(self, con: duckdb.DuckDBPyConnection, keys: list[SnapshotKey]) -> None:
        if self._complete:
            return
        missing = list({k for k in keys if k not in self._cache})
        if not missing:
            return
        probe = pa.table(
            {name: pa.array([k[n] for k in missing], _STR) for n, name in enumerate(KEY_COLUMNS)}
        )
        con.register("probe", probe)
        try:
            rows = con.execute(
                f"SELECT {SNAPSHOT_COLUMNS} FROM snapshot_state JOIN probe USING "  # noqa: S608
                f"({', '.join(KEY_COLUMNS)})"
            ).fetchall()
        finally:
            con.unregister("probe")
        for r in rows:
            self._cache[(r[0], r[1], r[2], r[3], r[4])] = Reading(r[5], r[6])
        self._trim()

    def _trim(self) -> None:
        excess = len(self._cache) - self._capacity
        for key in list(self._cache)[: max(0, excess)]:
            if key not in self._dirty:
                del self._cache[key]
                self._complete = False


def write(con: duckdb.DuckDBPyConnection, readings: dict[SnapshotKey, Reading], seq: int) -> None:
    """Inside the caller's transaction: upsert these readings, covering events up to ``seq``."""
    keys = list(readings)
    columns = {name: pa.array([k[n] for k in keys], _STR) for n, name in enumerate(KEY_COLUMNS)}
    columns["last_ts_us"] = pa.array([readings[k].ts_us for k in keys], pa.int64())
    columns["last_value"] = pa.array([readings[k].value for k in keys], pa.float64())
    con.register("snapshot_changes", pa.table(columns))
    try:
        con.execute("INSERT OR REPLACE INTO snapshot_state SELECT * FROM snapshot_changes")
    finally:
        con.unregister("snapshot_changes")
    con.execute("INSERT OR REPLACE INTO meta VALUES ('snapshot_seq', ?)", [str(seq)])
