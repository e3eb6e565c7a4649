"""The ingest journal: where an accepted group of events is made durable before its ack.

A DuckDB commit can wait hundreds of milliseconds behind a checkpoint (DuckDB
writes its whole WAL into the database file once it passes a threshold, and no
commit proceeds meanwhile). Acknowledging on DuckDB's commit would hand that
wait to every ingest request and live update queued behind it. So each group
commit is appended here and synced, and acknowledged; the applier thread inserts
it into DuckDB afterwards, and a start-up replays whatever DuckDB did not get.

The journal is a few fixed-size segment files, written before use (zeros, or
older records) so that syncing a record writes its data blocks and no file
metadata: an fsync that must commit metadata waits for the filesystem's journal,
which a checkpoint's large writes keep busy. Each record is

    magic (4 bytes) | seq (u64) | now_us (i64) | length (u32) | crc32 (u32) | payload

with the group's staged rows as an Arrow IPC stream for payload. A segment is
read up to its first record that does not check out (zeros, a record a crash cut
short, or the rest of an older one). A segment whose records DuckDB all holds is
reused from its start; its older records then carry seqs DuckDB already holds,
and the replay skips every such record.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from hypemeter.datadir import private_dir
from hypemeter.errors import StoreUnavailable

MAGIC = b"HMJ1"
HEADER = struct.Struct("<4sQqII")
SEGMENT_BYTES = 32 * 1024 * 1024
# The first segment is small (an idle store keeps little); each one filled doubles the next.
FIRST_SEGMENT_BYTES = 1024 * 1024
_SUFFIX = ".journal"
_ZEROS = bytes(1 << 20)


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    now_us: int
    rows: pa.Table


@dataclass(slots=True)
class _Segment:
    path: Path
    size: int
    last_seq: int = 0  # the newest record written in this use of the segment
    fd: int | None = None


class Journal:
    """``append`` on the writer thread; ``release`` and ``prepare`` on the applier thread."""

    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._current: _Segment | None = None
        self._offset = 0
        self._full: list[_Segment] = []  # written, waiting for DuckDB to hold them
        self._free: list[_Segment] = []  # ready to be written from the start
        self._created = 0
        self._next_size = min(FIRST_SEGMENT_BYTES, segment_bytes)

    def open(self) -> None:
        private_dir(self.directory)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink()  # a segment a crash left half written, never used

    def replay(self, after_seq: int) -> list[Record]:
        """Every record with a seq above ``after_seq``, in seq order.

        Call once, before the first ``append``; every segment is free afterwards.
        """
        found: list[Record] = []
        segments = [_Segment(p, p.stat().st_size) for p in sorted(self._paths())]
        for segment in segments:
            found.extend(_records(segment.path, after_seq))
        found.sort(key=lambda r: r.seq)
        with self._lock:
            self._free = segments
            self._created = max((int(s.path.stem) for s in segments), default=0)
        return found

    def append(self, seq: int, now_us: int, rows: pa.Table) -> None:
        """Write one record and sync it; raises StoreUnavailable when the disk refuses."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rows.schema) as writer:
            writer.write_table(rows)
        # Written as header and payload side by side: a group can be megabytes, not copied.
        payload = memoryview(sink.getvalue())
        header = HEADER.pack(MAGIC, seq, now_us, len(payload), zlib.crc32(payload))
        size = len(header) + len(payload)
        try:
            with self._lock:
                segment = self._room(size)
                assert segment.fd is not None
                if os.pwritev(segment.fd, [header, payload], self._offset) != size:
                    raise OSError("short write")
                os.fdatasync(segment.fd)
                self._offset += size
                segment.last_seq = seq
        except OSError as exc:
            raise StoreUnavailable(f"cannot write the ingest journal: {exc}") from exc

    def release(self, applied_seq: int) -> None:
        """DuckDB holds every group up to ``applied_seq``: full segments up to it are free."""
        with self._lock:
            done = [s for s in self._full if s.last_seq <= applied_seq]
            self._full = [s for s in self._full if s.last_seq > applied_seq]
            self._free.extend(done)

    def prepare(self) -> None:
        """Keep one written segment ready, so ``append`` never has to write one."""
        with self._lock:
            if self._free:
                return
            path, size = self._new_path(), self._next_size
        _fill(path, size)
        with self._lock:
            self._free.append(_Segment(path, size))

    def purge(self) -> None:
        """Delete every segment, the current one included: DuckDB holds all they hold.

        Called after an erasure, so the erased events leave the journal too.
        """
        with self._lock:
            segments = [*self._full, *self._free]
            if self._current is not None:
                segments.append(self._current)
            for segment in segments:
                _close(segment)
                segment.path.unlink(missing_ok=True)
            self._current, self._full, self._free, self._offset = None, [], [], 0

    def size_bytes(self) -> int:
        total = 0
        for path in self._paths():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def close(self) -> None:
        with self._lock:
            for segment in (*self._full, *self._free):
                _close(segment)
            if self._current is not None:
                _close(self._current)

    def recover(self) -> int:
        """Learn, after a start, which segments hold records (kept until released) and
        which are free; the newest record's seq (0 when there is none).

        An alternative to ``replay`` for a reader that reads what it needs with ``read``.
        """
        newest = 0
        with self._lock:
            for path in sorted(self._paths()):
                segment = _Segment(path, path.stat().st_size)
                segment.last_seq = max((seq for seq, _ in _headers(path)), default=0)
                if segment.last_seq:
                    self._full.append(segment)
                else:
                    self._free.append(segment)
                newest = max(newest, segment.last_seq)
                self._created = max(self._created, int(path.stem))
        return newest

    def read(self, after_seq: int, limit: int) -> list[Record]:
        """At most ``limit`` records above ``after_seq`` of those not released, by seq."""
        with self._lock:
            held = [s.path for s in self._full]
            if self._current is not None:
                held.append(self._current.path)
        wanted = sorted(
            (seq, path, at) for path in held for seq, at in _headers(path) if seq > after_seq
        )[:limit]
        return [_record_at(path, at) for _, path, at in wanted]

    # -- inside the lock ----------------------------------------------------------------

    def _room(self, size: int) -> _Segment:
        """The segment to write ``size`` bytes into at ``self._offset``."""
        current = self._current
        if current is not None and self._offset + size <= current.size:
            return current
        if current is not None:
            _close(current)  # written out: nothing more goes into it until it is reused
            self._full.append(current)
            self._next_size = min(self._segment_bytes, max(self._next_size, 2 * current.size))
        fits = [s for s in self._free if s.size >= size]
        if fits:
            current = max(fits, key=lambda s: s.size)
            self._free.remove(current)
        else:
            # No written segment is ready (or the record outgrows one): write one now.
            current = _Segment(self._new_path(), max(self._next_size, size))
            _fill(current.path, current.size)
        current.fd = os.open(current.path, os.O_WRONLY)
        current.last_seq = 0
        self._current, self._offset = current, 0
        return current

    def _new_path(self) -> Path:
        self._created += 1
        return self.directory / f"{self._created:06d}{_SUFFIX}"

    def _paths(self) -> list[Path]:
        return list(self.directory.glob(f"*{_SUFFIX}"))


def _records(path: Path, after_seq: int) -> Iterator[Record]:
    data = path.read_bytes()
    at = 0
    while at + HEADER.size <= len(data):
        magic, seq, now_us, length, crc = HEADER.unpack_from(data, at)
        start = at + HEADER.size
        payload = data[start : start + length]
        if magic != MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
            return
        at = start + length
        if seq > after_seq:
            yield Record(seq, now_us, pa.ipc.open_stream(payload).read_all())


def _headers(path: Path) -> Iterator[tuple[int, int]]:
    """(seq, offset) of each record that checks out, up to the first that does not."""
    data = path.read_bytes()
    at = previous = 0
    while at + HEADER.size <= len(data):
        magic, seq, _, length, crc = HEADER.unpack_from(data, at)
        start = at + HEADER.size
        if magic != MAGIC or start + length > len(data) or seq <= previous:
            return  # seqs only grow in one use of a segment: a lower one is an older use's
        if zlib.crc32(memoryview(data)[start : start + length]) != crc:
            return
        yield seq, at
        at, previous = start + length, seq


def _record_at(path: Path, at: int) -> Record:
    with path.open("rb") as file:
        file.seek(at)
        _, seq, now_us, length, _ = HEADER.unpack(file.read(HEADER.size))
        payload = file.read(length)
    return Record(seq, now_us, pa.ipc.open_stream(payload).read_all())


def _fill(path: Path, size: int) -> None:
    """Write ``size`` zero bytes to a new file and make it and its name durable."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        while written < size:
            written += os.write(fd, _ZEROS[: min(len(_ZEROS), size - written)])
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.rename(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _close(segment: _Segment) -> None:
    if segment.fd is not None:
        os.close(segment.fd)
        segment.fd = None
