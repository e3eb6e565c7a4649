"""The last reading per snapshot key, used to turn snapshots into deltas."""

from __future__ import annotations

from collections import OrderedDict

import duckdb
import pyarrow as pa

from hypemeter.backends.embedded.duckdb_store.schema import SNAPSHOT_COLUMNS
from hypemeter.events.model import Reading, snapshot_delta

SnapshotKey = tuple[str, str, str, str, str]
KEY_COLUMNS = ("tenant_id", "influencer_id", "platform", "content_id", "metric")
_STR = pa.string()


class SnapshotState:
    """A bounded cache of readings over the ``snapshot_state`` table.

    Changes of one group commit are staged in an overlay and merged into the
    cache only after the commit succeeds. Owned by the writer thread.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._cache: OrderedDict[SnapshotKey, Reading] = OrderedDict()
        # True while every stored reading is cached: a miss then needs no query.
        self._complete = False
        self.overlay: dict[SnapshotKey, Reading] = {}

    def warm(self, con: duckdb.DuckDBPyConnection) -> None:
        rows = con.execute("SELECT count(*) FROM snapshot_state").fetchall()
        if int(rows[0][0]) > self._capacity:
            return
        for r in con.execute(f"SELECT {SNAPSHOT_COLUMNS} FROM snapshot_state").fetchall():  # noqa: S608
            self._cache[(r[0], r[1], r[2], r[3], r[4])] = Reading(r[5], r[6])
        self._complete = True

    def apply(
        self, con: duckdb.DuckDBPyConnection, keys: list[SnapshotKey], readings: list[Reading]
    ) -> list[float]:
        """Deltas of these readings, in order, staging the new state in the overlay."""
        self._load(con, [k for k in keys if k not in self.overlay])
        deltas: list[float] = []
        for key, reading in zip(keys, readings, strict=True):
            previous = self.overlay.get(key) or self._cache.get(key)
            delta, state = snapshot_delta(previous, reading)
            deltas.append(delta)
            self.overlay[key] = state
        return deltas

    def save(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write the overlay inside the caller's transaction."""
        if not self.overlay:
            return
        keys = list(self.overlay)
        columns = {name: pa.array([k[n] for k in keys], _STR) for n, name in enumerate(KEY_COLUMNS)}
        columns["last_ts_us"] = pa.array([self.overlay[k].ts_us for k in keys], pa.int64())
        columns["last_value"] = pa.array([self.overlay[k].value for k in keys], pa.float64())
        con.register("snapshot_changes", pa.table(columns))
        try:
            con.execute("INSERT OR REPLACE INTO snapshot_state SELECT * FROM snapshot_changes")
        finally:
            con.unregister("snapshot_changes")

    def committed(self) -> None:
        for key, reading in self.overlay.items():
            self._cache[key] = reading
            self._cache.move_to_end(key)
        self.overlay = {}
        self._trim()

    def rolled_back(self) -> None:
        self.overlay = {}

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
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
            self._complete = False
