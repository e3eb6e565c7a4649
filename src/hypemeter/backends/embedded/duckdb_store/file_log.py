"""The embedded profile's event log: the ingest journal behind the ``EventLog`` port.

Appends are serialised and each one is synced before it returns (see ``journal``);
the file I/O runs off the event loop. Entries stay readable until ``release``.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pyarrow as pa

from hypemeter.backends.embedded.duckdb_store.journal import Journal
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
        self._open = False
        await asyncio.to_thread(self.journal.close)

    async def append(self, tenant_id: str, batch: EventBatch) -> int:
        table = batch.arrow()
        tenants = pa.array([tenant_id] * table.num_rows, pa.string())
        return await asyncio.to_thread(self.write, table.add_column(0, "tenant_id", tenants))

    def write(self, rows: pa.Table) -> int:
        """Append and sync one entry of rows that name their tenants; its seq."""
        if not self._open:
            raise StoreUnavailable("the event log is closed")
        with self._lock:
            seq = self._seq + 1
            self.journal.append(seq, self._clock.now_us(), rows)
            self._seq = seq
        return seq

    async def read(self, after_seq: int, *, limit: int = 1000) -> list[LogEntry]:
        records = await asyncio.to_thread(self.journal.read, after_seq, limit)
        return [LogEntry(r.seq, r.now_us, r.rows) for r in records]

    def release(self, seq: int) -> None:
        """Entries up to ``seq`` are committed to the store: the log may drop them."""
        self.journal.release(seq)

    async def check(self) -> None:
        if not self._open:
            raise StoreUnavailable("the event log is closed")
