"""What the embedded store does once when it opens, on its writer thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import duckdb
import numpy as np

from hypemeter.backends.embedded.duckdb_store.applier import Staged
from hypemeter.backends.embedded.duckdb_store.file_log import FileEventLog
from hypemeter.backends.embedded.fingerprints import FingerprintIndex, Fingerprints

log = logging.getLogger("hypemeter.store")
RESTORE_CHUNK = 250_000


def replay_log(
    con: duckdb.DuckDBPyConnection,
    event_log: FileEventLog,
    insert: Callable[[duckdb.DuckDBPyConnection, list[Staged]], int],
) -> int:
    """Insert (with ``insert``) what the log holds beyond DuckDB's last group, then let
    the log go on after it; that group's seq."""
    rows = con.execute(
        "SELECT greatest((SELECT coalesce(max(seq), 0) FROM events), "
        "(SELECT coalesce(max(value::BIGINT), 0) FROM meta WHERE key = 'journal_seq'))"
    ).fetchall()
    stored = int(rows[0][0])
    batch: list[Staged] = []
    replayed = pending = 0
    for record in event_log.replay(stored):
        batch.append(Staged(record.seq, record.now_us, record.rows))
        replayed += record.rows.num_rows
        pending += record.rows.num_rows
        if pending >= RESTORE_CHUNK:
            stored = insert(con, batch)
            batch, pending = [], 0
    if batch:
        stored = insert(con, batch)
    event_log.resume(stored)
    if replayed:
        log.info("ingest journal replayed", extra={"events": replayed, "seq": stored})
    return stored


def restore_index(con: duckdb.DuckDBPyConnection, index: FingerprintIndex, since_us: int) -> None:
    """Fill the dedup index with the ids stored since ``since_us`` (the window)."""
    started = time.perf_counter()
    reader = con.sql(
        "SELECT fp_hi, fp_lo, epoch_us(ingested_at) AS at FROM events "
        "WHERE fp_hi IS NOT NULL AND ingested_at >= make_timestamptz($horizon::BIGINT) "
        "ORDER BY seq",
        params={"horizon": since_us},
    ).to_arrow_reader(RESTORE_CHUNK)
    restored = 0
    for chunk in reader:
        hi = chunk.column(0).to_numpy().astype(np.uint64)
        lo = chunk.column(1).to_numpy().astype(np.uint64)
        newest = int(chunk.column(2).to_numpy().max())
        index.add(Fingerprints(hi, lo), newest)
        restored += len(hi)
    log.info(
        "dedup index restored",
        extra={"event_ids": restored, "seconds": round(time.perf_counter() - started, 3)},
    )
