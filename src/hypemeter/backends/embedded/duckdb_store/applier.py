"""The applier thread: inserts journaled groups into DuckDB, behind the acknowledgements.

The writer thread acknowledges a group once the journal holds it and hands it
here. This thread commits the groups waiting, in seq order, several to a
transaction; while DuckDB checkpoints, only this thread waits. Readers that
must see every acknowledged event wait for ``applied`` to reach the seq they
were acknowledged (``wait_applied``). The backlog is bounded: the writer thread
stops acknowledging once ``limit`` events wait here, so ingest sheds with 429s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from hypemeter.errors import StoreUnavailable

log = logging.getLogger("hypemeter.store")
Snapshots = dict[Any, Any]
# How long a small backlog waits for more groups when no reader waits for it: each
# DuckDB transaction costs milliseconds whatever it holds, and single-event traffic
# would otherwise pay one per group commit.
LINGER_S = 0.01


@dataclass(frozen=True, slots=True)
class Staged:
    """One acknowledged group: its rows, and the snapshot readings due to be saved."""

    seq: int
    now_us: int
    rows: pa.Table
    snapshots: Snapshots | None = None


def stacked(batch: list[Staged]) -> list[pa.Table]:
    """The rows of several groups as few tables as their schemas allow (one, normally),
    each row carrying its group's ``seq`` and ``ingested_us``.

    One INSERT per table, not per group: DuckDB's fixed cost of scanning an Arrow
    table would otherwise dominate groups of a few single-event requests.
    """
    runs: list[list[Staged]] = []
    for staged in batch:
        if not staged.rows.num_rows:
            continue
        if runs and runs[-1][-1].rows.schema.equals(staged.rows.schema):
            runs[-1].append(staged)
        else:
            runs.append([staged])
    return [_stack(run) for run in runs]


def _stack(run: list[Staged]) -> pa.Table:
    sizes = [s.rows.num_rows for s in run]
    table = run[0].rows if len(run) == 1 else pa.concat_tables([s.rows for s in run])
    seqs = np.repeat(np.array([s.seq for s in run], dtype=np.int64), sizes)
    stamps = np.repeat(np.array([s.now_us for s in run], dtype=np.int64), sizes)
    return table.append_column("seq", pa.array(seqs)).append_column("ingested_us", pa.array(stamps))


class Applier:
    """Runs ``apply(batch)`` for queued groups on its own thread, in order."""

    def __init__(
        self,
        apply: Callable[[list[Staged]], None],
        *,
        limit: int,
        batch_events: int,
        applied: int,
    ) -> None:
        self._apply = apply
        self._limit = limit
        self._batch_events = batch_events
        self._queue: deque[Staged] = deque()
        self._backlog = 0
        self._changed = threading.Condition()
        self._stopping = False
        self._readers = 0  # threads in wait_applied: they must not wait for a linger
        self._failure: BaseException | None = None
        self.applied = applied
        self.submitted = applied
        self._thread = threading.Thread(target=self._run, name="hypemeter-apply", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, staged: Staged) -> None:
        """Queue a journaled group; blocks while the backlog is over its limit."""
        with self._changed:
            while self._backlog > self._limit and self._failure is None:
                self._changed.wait()
            self._raise_failure()
            self._queue.append(staged)
            self._backlog += staged.rows.num_rows
            self.submitted = staged.seq
            self._changed.notify_all()

    def wait_applied(self, seq: int) -> None:
        """Block until DuckDB has committed every group up to ``seq``."""
        with self._changed:
            self._readers += 1
            self._changed.notify_all()
            try:
                while self.applied < seq and self._failure is None:
                    self._changed.wait()
            finally:
                self._readers -= 1
            self._raise_failure()

    def drain(self) -> None:
        self.wait_applied(self.submitted)

    def stop(self) -> None:
        """Apply what is queued, then end the thread."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def check(self) -> None:
        """Raise StoreUnavailable once applying has failed."""
        with self._changed:
            self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise StoreUnavailable(f"the store could not apply the journal: {self._failure}")

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if not self._queue:
                    return
                self._linger()
                batch = self._take()
            try:
                self._apply(batch)
            except Exception as exc:
                # The groups stay in the journal; a restart replays them.
                log.exception("applying %d journaled groups to DuckDB failed", len(batch))
                with self._changed:
                    self._failure = exc
                    self._changed.notify_all()
                return
            with self._changed:
                self.applied = batch[-1].seq
                self._backlog -= sum(s.rows.num_rows for s in batch)
                self._changed.notify_all()

    def _linger(self) -> None:
        """Inside the lock: let a small backlog grow for a moment, unless someone waits."""
        deadline = time.monotonic() + LINGER_S
        while self._backlog < self._batch_events and not self._readers and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._changed.wait(left)

    def _take(self) -> list[Staged]:
        batch = [self._queue.popleft()]
        events = batch[0].rows.num_rows
        while self._queue and events < self._batch_events:
            staged = self._queue.popleft()
            batch.append(staged)
            events += staged.rows.num_rows
        return batch
