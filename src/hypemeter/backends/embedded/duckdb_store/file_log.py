"""The embedded profile's event log: the ingest journal behind the ``EventLog`` port.

The store's group commit writes each group here, synced, before it acknowledges
(``write``, on the writer thread); its start replays what DuckDB lacks (``replay``,
``resume``), and its applier releases what DuckDB holds. The port's async methods
serve other readers. Appends are serialised: seqs follow file order.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pyarrow as pa

from hypemeter.backends.embedded.duckdb_store.journal import Journal, Record
from hypemeter.clock import Clock
from hypemeter.errors import StoreUnavailable
from hypemeter.events.batch import EventBatch
from hypemeter.events.ports import LogEntry


class FileEventLog:
    def __init__(self, directory: Path, clock: Clock) -> None:
        self.journal = Journal(directory)
        self._clock = clock
        self._seq = 0
        self._lock = threading.Lock()  # one append at a time: seqs follow file order
        self._open = False

    @property
    def last_seq(self) -> int:
        return self._seq

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        self.journal.open()
        self._seq = self.journal.recover()
        self.journal.prepare()
        self._open = True

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def append(self, tenant_id: str, batch: EventBatch) -> int:
        table = batch.arrow()
        tenants = pa.array([tenant_id] * table.num_rows, pa.string())
        return await asyncio.to_thread(self.write, table.add_column(0, "tenant_id", tenants))

    def write(self, rows: pa.Table, now_us: int | None = None) -> int:
        """Append and sync one entry of rows that name their tenants (logged at
        ``now_us``, by default now); its seq. Raises StoreUnavailable."""
        if not self._open:
            raise StoreUnavailable("the event log is closed")
        with self._lock:
            seq = self._seq + 1
            logged = self._clock.now_us() if now_us is None else now_us
            self.journal.append(seq, logged, rows)
            self._seq = seq
        return seq

    def replay(self, after_seq: int) -> list[Record]:
        """At the store's start: open the log and read every entry above ``after_seq``
        (what the store lacks); ``resume`` once the store holds them."""
        self.journal.open()
        return self.journal.replay(after_seq)

    def resume(self, seq: int) -> None:
        """Appends go on after ``seq``, the store's last entry."""
        self._seq = seq
        self.journal.prepare()
        self._open = True

    def prepare(self) -> None:
        self.journal.prepare()

    def purge(self) -> None:
        """Drop every entry: the store holds them all (after an erasure, so that the
        erased events leave the log too)."""
        self.journal.purge()

    def size_bytes(self) -> int:
        return self.journal.size_bytes()

    def close(self) -> None:
        self._open = False
        self.journal.close()

    async def read(self, after_seq: int, *, limit: int = 1000) -> list[LogEntry]:
        records = await asyncio.to_thread(self.journal.read, after_seq, limit)
        return [LogEntry(r.seq, r.now_us, r.rows) for r in records]

    def release(self, seq: int) -> None:
        """Entries up to ``seq`` are committed to the store: the log may drop them."""
        self.journal.release(seq)

    async def check(self) -> None:
        if not self._open:
            raise StoreUnavailable("the event log is closed")
