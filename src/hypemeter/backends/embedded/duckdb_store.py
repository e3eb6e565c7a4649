"""The embedded store: one DuckDB file holding events, tenants, keys and state.

DuckDB is synchronous and admits one writing process, so a single writer
thread (``WriterThread``) owns the connection; the event loop never blocks on it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from hypemeter.auth.model import ApiKey, Scope, Tenant
from hypemeter.backends.embedded.duckdb_writer import Append, WriterThread, resolve
from hypemeter.backends.embedded.fingerprints import FingerprintIndex, Fingerprints, fingerprint
from hypemeter.backends.ports import AppendResult
from hypemeter.clock import Clock
from hypemeter.errors import StoreUnavailable
from hypemeter.events.model import EventBatch, MetricDefinition, MetricKind, Reading, snapshot_delta

log = logging.getLogger("hypemeter.store")
T = TypeVar("T")
SCHEMA_VERSION = "1"
SNAPSHOT_CACHE = 200_000
RESTORE_CHUNK = 250_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS tenants (tenant_id VARCHAR PRIMARY KEY, created_at_us BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY, tenant_id VARCHAR NOT NULL, key_hash VARCHAR NOT NULL UNIQUE,
    scopes VARCHAR[] NOT NULL, name VARCHAR NOT NULL, created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT);
CREATE TABLE IF NOT EXISTS custom_metrics (
    tenant_id VARCHAR NOT NULL, name VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    PRIMARY KEY (tenant_id, name));
CREATE TABLE IF NOT EXISTS events (
    tenant_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, fp_hi UBIGINT, fp_lo UBIGINT,
    influencer_id VARCHAR NOT NULL, platform VARCHAR NOT NULL, content_id VARCHAR,
    campaign_id VARCHAR, metric VARCHAR NOT NULL, kind VARCHAR NOT NULL, value DOUBLE NOT NULL,
    delta DOUBLE NOT NULL, ts TIMESTAMPTZ NOT NULL, user_id VARCHAR, text VARCHAR,
    tags VARCHAR[], variant VARCHAR, properties VARCHAR, seq BIGINT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot_state (
    tenant_id VARCHAR, influencer_id VARCHAR, platform VARCHAR, content_id VARCHAR,
    metric VARCHAR, last_ts_us BIGINT NOT NULL, last_value DOUBLE NOT NULL,
    PRIMARY KEY (tenant_id, influencer_id, platform, content_id, metric));
"""

EVENT_COLUMNS = (
    "event_id, fp_hi, fp_lo, influencer_id, platform, content_id, campaign_id, metric, kind, "
    "value, delta, ts, user_id, text, tags, variant, properties"
)

SnapshotKey = tuple[str, str, str, str, str]
_TS = pa.timestamp("us", tz="UTC")
_STR = pa.string()


class DuckDBDatabase:
    """The DuckDB file and its writer thread, shared by the embedded store adapters."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        dedup_window_us: int,
        dedup_memory_entries: int,
        queue_limit: int,
        commit_max_events: int,
        memory_limit: str = "1GB",
        restore_dedup: bool = True,
    ) -> None:
        self.path = path
        self._clock = clock
        self._memory_limit = memory_limit
        self._dedup_window_us = dedup_window_us
        self._index = FingerprintIndex(
            window_us=dedup_window_us,
            memory_entries=dedup_memory_entries,
            spill_dir=path.parent / f"{path.stem}.dedup",
        )
        self._snapshots: OrderedDict[SnapshotKey, Reading] = OrderedDict()
        self._seq = 0
        self._writer = WriterThread(
            self._connect,
            self._commit,
            queue_limit=queue_limit,
            commit_max_events=commit_max_events,
        )
        self._running = False
        self._restore_dedup = restore_dedup

    @property
    def index(self) -> FingerprintIndex:
        return self._index

    def start(self) -> None:
        """Open the file (creating it), migrate, and rebuild the dedup index."""
        if self._running:
            return
        try:
            self._writer.start()
        except duckdb.Error as exc:
            raise StoreUnavailable(f"cannot open the store {self.path}: {exc}") from exc
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._writer.stop()
            self._index.close()
            self._running = False

    async def run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        if not self._running:
            raise StoreUnavailable("the store is closed")
        return await self._writer.call(fn)

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        if not self._running:
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

    # -- writer thread -------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(self.path), config={"memory_limit": self._memory_limit})
        con.execute("SET TimeZone = 'UTC'")
        con.execute(SCHEMA)
        con.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
            [SCHEMA_VERSION],
        )
        row = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        self._seq = int(row[0]) if row else 0
        if self._restore_dedup:
            self._restore_index(con)
        return con

    def _restore_index(self, con: duckdb.DuckDBPyConnection) -> None:
        started = time.perf_counter()
        horizon = self._clock.now_us() - self._dedup_window_us
        reader = con.execute(
            "SELECT fp_hi, fp_lo, epoch_us(ingested_at) AS at FROM events "
            "WHERE fp_hi IS NOT NULL AND ingested_at >= make_timestamptz(?::BIGINT) "
            "ORDER BY seq",
            [horizon],
        ).to_arrow_reader(RESTORE_CHUNK)
        restored = 0
        assert reader is not None
        for chunk in reader:
            hi = chunk.column(0).to_numpy().astype(np.uint64)
            lo = chunk.column(1).to_numpy().astype(np.uint64)
            ints = [(h << 64) | low for h, low in zip(hi.tolist(), lo.tolist(), strict=True)]
            newest = int(chunk.column(2).to_numpy().max())
            self._index.add(Fingerprints(ints, hi, lo), newest)
            restored += len(ints)
        log.info(
            "dedup index restored",
            extra={"event_ids": restored, "seconds": round(time.perf_counter() - started, 3)},
        )

    def _commit(self, con: duckdb.DuckDBPyConnection, jobs: list[Append]) -> None:
        now_us = self._clock.now_us()
        seq = self._seq + 1
        group_seen: set[int] = set()
        overlay: dict[SnapshotKey, Reading] = {}
        new_fps: list[Fingerprints] = []
        staged: list[tuple[str, pa.Table]] = []
        results: list[AppendResult] = []
        for job in jobs:
            table, fps, accepted = self._stage(con, job.tenant_id, job.batch, group_seen, overlay)
            staged.append((job.tenant_id, table))
            new_fps.append(fps)
            batch_len = len(job.batch)
            results.append(AppendResult(accepted, batch_len - accepted, seq))
        con.execute("BEGIN TRANSACTION")
        try:
            for tenant_id, table in staged:
                if table.num_rows:
                    self._insert(con, tenant_id, table, seq, now_us)
            if overlay:
                self._save_snapshots(con, overlay)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        self._seq = seq
        for fps in new_fps:
            self._index.add(fps, now_us)
        self._index.expire(now_us)
        self._remember_snapshots(overlay)
        for job, result in zip(jobs, results, strict=True):
            resolve(job.future, result)

    def _insert(
        self, con: duckdb.DuckDBPyConnection, tenant_id: str, table: pa.Table, seq: int, now_us: int
    ) -> None:
        con.register("incoming", table)
        try:
            con.execute(
                f"INSERT INTO events (tenant_id, {EVENT_COLUMNS}, seq, ingested_at) "  # noqa: S608
                f"SELECT ?, {EVENT_COLUMNS}, ?, make_timestamptz(?::BIGINT) FROM incoming",
                [tenant_id, seq, now_us],
            )
        finally:
            con.unregister("incoming")

    def _stage(
        self,
        con: duckdb.DuckDBPyConnection,
        tenant_id: str,
        batch: EventBatch,
        group_seen: set[int],
        overlay: dict[SnapshotKey, Reading],
    ) -> tuple[pa.Table, Fingerprints, int]:
        keep, fps, positions = self._dedup(tenant_id, batch, group_seen)
        deltas = self._deltas(con, tenant_id, batch, keep, overlay)
        table = self._to_arrow(batch, fps, positions, deltas)
        kept_positions = [i for i, p in enumerate(positions) if keep[p]]
        accepted = sum(keep)
        if accepted < len(batch):
            table = table.filter(pa.array(keep, type=pa.bool_()))
        return table, fps.take(kept_positions), accepted

    def _dedup(
        self, tenant_id: str, batch: EventBatch, group_seen: set[int]
    ) -> tuple[list[bool], Fingerprints, list[int]]:
        """Mark duplicates; returns the keep mask, fingerprints and their batch positions."""
        positions = [i for i, e in enumerate(batch.event_id) if e is not None]
        fps = Fingerprints.of([fingerprint(tenant_id, batch.event_id[i] or "") for i in positions])
        keep = [True] * len(batch)
        if not positions:
            return keep, fps, positions
        seen = self._index.seen(fps).tolist()
        for n, (pos, fp) in enumerate(zip(positions, fps.ints, strict=True)):
            if seen[n] or fp in group_seen:
                keep[pos] = False
            else:
                group_seen.add(fp)
        return keep, fps, positions

    def _deltas(
        self,
        con: duckdb.DuckDBPyConnection,
        tenant_id: str,
        batch: EventBatch,
        keep: list[bool],
        overlay: dict[SnapshotKey, Reading],
    ) -> list[float]:
        deltas = list(batch.value)
        snaps = [i for i, k in enumerate(batch.kind) if k == "snapshot" and keep[i]]
        if not snaps:
            return deltas
        keys = [
            (
                tenant_id,
                batch.influencer_id[i],
                batch.platform[i],
                batch.content_id[i] or "",
                batch.metric[i],
            )
            for i in snaps
        ]
        self._load_snapshots(con, [k for k in keys if k not in overlay])
        for i, key in zip(snaps, keys, strict=True):
            previous = overlay.get(key) or self._snapshots.get(key)
            delta, state = snapshot_delta(previous, Reading(batch.ts_us[i], batch.value[i]))
            deltas[i] = delta
            overlay[key] = state
        return deltas

    def _load_snapshots(self, con: duckdb.DuckDBPyConnection, keys: list[SnapshotKey]) -> None:
        missing = list({k for k in keys if k not in self._snapshots})
        if not missing:
            return
        probe = pa.table(
            {name: pa.array([k[n] for k in missing], _STR) for n, name in enumerate(_SNAP_COLS)}
        )
        con.register("probe", probe)
        try:
            rows = con.execute(
                "SELECT s.tenant_id, s.influencer_id, s.platform, s.content_id, s.metric, "
                "s.last_ts_us, s.last_value FROM snapshot_state s JOIN probe p USING "
                "(tenant_id, influencer_id, platform, content_id, metric)"
            ).fetchall()
        finally:
            con.unregister("probe")
        for row in rows:
            self._snapshots[(row[0], row[1], row[2], row[3], row[4])] = Reading(row[5], row[6])
        self._trim_snapshot_cache()

    def _save_snapshots(
        self, con: duckdb.DuckDBPyConnection, overlay: dict[SnapshotKey, Reading]
    ) -> None:
        keys = list(overlay)
        columns: dict[str, pa.Array] = {
            name: pa.array([k[n] for k in keys], _STR) for n, name in enumerate(_SNAP_COLS)
        }
        columns["last_ts_us"] = pa.array([overlay[k].ts_us for k in keys], pa.int64())
        columns["last_value"] = pa.array([overlay[k].value for k in keys], pa.float64())
        con.register("snapshot_changes", pa.table(columns))
        try:
            con.execute("INSERT OR REPLACE INTO snapshot_state SELECT * FROM snapshot_changes")
        finally:
            con.unregister("snapshot_changes")

    def _remember_snapshots(self, overlay: dict[SnapshotKey, Reading]) -> None:
        for key, reading in overlay.items():
            self._snapshots[key] = reading
            self._snapshots.move_to_end(key)
        self._trim_snapshot_cache()

    def _trim_snapshot_cache(self) -> None:
        while len(self._snapshots) > SNAPSHOT_CACHE:
            self._snapshots.popitem(last=False)

    @staticmethod
    def _to_arrow(
        batch: EventBatch, fps: Fingerprints, positions: list[int], deltas: list[float]
    ) -> pa.Table:
        n = len(batch)
        hi = np.zeros(n, dtype=np.uint64)
        lo = np.zeros(n, dtype=np.uint64)
        missing = np.ones(n, dtype=np.bool_)
        if positions:
            at = np.asarray(positions, dtype=np.int64)
            hi[at], lo[at], missing[at] = fps.hi, fps.lo, False
        ids = batch.event_id
        if len(positions) < n:
            prefix = f"s{secrets.token_hex(12)}-"
            ids = [e if e is not None else f"{prefix}{i}" for i, e in enumerate(ids)]
        return pa.table(
            {
                "event_id": pa.array(ids, _STR),
                "fp_hi": pa.array(hi, mask=missing),
                "fp_lo": pa.array(lo, mask=missing),
                "influencer_id": pa.array(batch.influencer_id, _STR),
                "platform": pa.array(batch.platform, _STR),
                "content_id": pa.array(batch.content_id, _STR),
                "campaign_id": pa.array(batch.campaign_id, _STR),
                "metric": pa.array(batch.metric, _STR),
                "kind": pa.array(batch.kind, _STR),
                "value": pa.array(batch.value, pa.float64()),
                "delta": pa.array(deltas, pa.float64()),
                "ts": pa.array(batch.ts_us, pa.int64()).cast(_TS),
                "user_id": pa.array(batch.user_id, _STR),
                "text": pa.array(batch.text, _STR),
                "tags": pa.array(batch.tags, pa.list_(_STR)),
                "variant": pa.array(batch.variant, _STR),
                "properties": pa.array(batch.properties, _STR),
            }
        )


_SNAP_COLS = ("tenant_id", "influencer_id", "platform", "content_id", "metric")


class DuckDBEventStore:
    """EventStore port on the embedded DuckDB file."""

    def __init__(self, db: DuckDBDatabase) -> None:
        self._db = db

    async def start(self) -> None:
        self._db.start()

    async def aclose(self) -> None:
        self._db.stop()

    async def append(self, tenant_id: str, batch: EventBatch) -> AppendResult:
        return await self._db.append(tenant_id, batch)

    async def count_events(self, tenant_id: str) -> int:
        def count(con: duckdb.DuckDBPyConnection) -> int:
            row = con.execute(
                "SELECT count(*) FROM events WHERE tenant_id = ?", [tenant_id]
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._db.run(count)

    async def check_writable(self) -> None:
        def touch(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('ready_check', ?)", [str(time.time_ns())]
            )

        try:
            await self._db.run(touch)
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"the store is not writable: {exc}") from exc

    def queue_depth(self) -> int:
        return self._db.queue_depth()

    def size_bytes(self) -> int:
        return self._db.size_bytes()


def _key_from_row(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(
        key_id=row[0],
        tenant_id=row[1],
        key_hash=row[2],
        scopes=frozenset(Scope(s) for s in row[3]),
        name=row[4],
        created_at_us=row[5],
        revoked_at_us=row[6],
    )


_KEY_COLUMNS = "key_id, tenant_id, key_hash, scopes, name, created_at_us, revoked_at_us"


class DuckDBTenantStore:
    """TenantStore port on the embedded DuckDB file."""

    def __init__(self, db: DuckDBDatabase) -> None:
        self._db = db

    async def start(self) -> None:
        self._db.start()

    async def aclose(self) -> None:
        self._db.stop()

    async def create_tenant(self, tenant: Tenant) -> bool:
        def insert(con: duckdb.DuckDBPyConnection) -> bool:
            rows = con.execute(
                "INSERT INTO tenants VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING tenant_id",
                [tenant.tenant_id, tenant.created_at_us],
            ).fetchall()
            return bool(rows)

        return await self._db.run(insert)

    async def list_tenants(self) -> list[Tenant]:
        def select(con: duckdb.DuckDBPyConnection) -> list[Tenant]:
            rows = con.execute("SELECT tenant_id, created_at_us FROM tenants ORDER BY 1").fetchall()
            return [Tenant(r[0], r[1]) for r in rows]

        return await self._db.run(select)

    async def add_key(self, key: ApiKey) -> None:
        def insert(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                [
                    key.key_id,
                    key.tenant_id,
                    key.key_hash,
                    sorted(s.value for s in key.scopes),
                    key.name,
                    key.created_at_us,
                    key.revoked_at_us,
                ],
            )

        await self._db.run(insert)

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        def select(con: duckdb.DuckDBPyConnection) -> list[ApiKey]:
            sql = f"SELECT {_KEY_COLUMNS} FROM api_keys"  # noqa: S608
            if tenant_id is None:
                rows = con.execute(sql + " ORDER BY created_at_us").fetchall()
            else:
                rows = con.execute(
                    sql + " WHERE tenant_id = ? ORDER BY created_at_us", [tenant_id]
                ).fetchall()
            return [_key_from_row(r) for r in rows]

        return await self._db.run(select)

    async def revoke_key(self, key_id: str, revoked_at_us: int) -> ApiKey | None:
        def update(con: duckdb.DuckDBPyConnection) -> ApiKey | None:
            con.execute(
                "UPDATE api_keys SET revoked_at_us = coalesce(revoked_at_us, ?) WHERE key_id = ?",
                [revoked_at_us, key_id],
            )
            row = con.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?",  # noqa: S608
                [key_id],
            ).fetchone()
            return _key_from_row(row) if row else None

        return await self._db.run(update)

    async def add_metric(self, tenant_id: str, metric: MetricDefinition) -> bool:
        def insert(con: duckdb.DuckDBPyConnection) -> bool:
            rows = con.execute(
                "INSERT INTO custom_metrics VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING name",
                [tenant_id, metric.name, metric.kind.value],
            ).fetchall()
            return bool(rows)

        return await self._db.run(insert)

    async def list_metrics(self) -> list[tuple[str, MetricDefinition]]:
        def select(con: duckdb.DuckDBPyConnection) -> list[tuple[str, MetricDefinition]]:
            rows = con.execute(
                "SELECT tenant_id, name, kind FROM custom_metrics ORDER BY 1, 2"
            ).fetchall()
            return [(r[0], MetricDefinition(r[1], MetricKind(r[2]))) for r in rows]

        return await self._db.run(select)
