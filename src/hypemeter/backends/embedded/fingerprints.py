"""The embedded dedup index: which (tenant, event_id) were seen within the window.

Each id is reduced to a 128-bit fingerprint, MD5(event_id) XOR MD5(tenant)
(``hypemeter.events.batch.fingerprint``).
Two distinct ids share a fingerprint with probability about n^2 / 2^129
(below 1e-20 for a billion ids in the window), the same odds UUIDs rely on;
below that, a new event is never reported as a duplicate.

Memory stays bounded whatever the window holds: the newest ids sit in a few
sorted in-memory runs of at most ``memory_entries`` in all; older generations
are frozen into sorted runs written to memory-mapped files, which the kernel
pages in and out as needed. Every lookup and insert is a numpy operation over
a whole group of ids: no Python work per id. Runs are a cache: the store rebuilds them from its own
rows at start-up, so they are never the source of truth.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hypemeter.datadir import open_private, private_dir

U64 = npt.NDArray[np.uint64]
GENERATIONS_PER_WINDOW = 24
MAX_RUNS = 64


@dataclass(slots=True)
class Fingerprints:
    """Fingerprints as two arrays of 64-bit words: ``hi`` (bytes 8-15) and ``lo`` (0-7)."""

    hi: U64
    lo: U64

    def __len__(self) -> int:
        return len(self.hi)

    @classmethod
    def of(cls, digests: list[bytes]) -> Fingerprints:
        if not digests:
            empty = np.zeros(0, dtype=np.uint64)
            return cls(empty, empty)
        pairs = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2).astype(np.uint64)
        return cls(np.ascontiguousarray(pairs[:, 1]), np.ascontiguousarray(pairs[:, 0]))

    def take(self, positions: list[int]) -> Fingerprints:
        index = np.asarray(positions, dtype=np.int64)
        return Fingerprints(self.hi[index], self.lo[index])


def _sorted(hi: U64, lo: U64) -> tuple[U64, U64]:
    # Runs are ordered by the hi word alone; lookups scan the rare equal-hi ranges.
    order = np.argsort(hi)
    return np.ascontiguousarray(hi[order]), np.ascontiguousarray(lo[order])


@dataclass(slots=True)
class _Run:
    """Fingerprints sorted by hi; on disk (memory-mapped) when ``path`` is set."""

    hi: U64
    lo: U64
    newest_us: int
    oldest_us: int
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.hi)

    def contains(self, hi: U64, lo: U64) -> npt.NDArray[np.bool_]:
        at = np.searchsorted(self.hi, hi, side="left")
        inside = at < len(self.hi)
        hit_hi = np.zeros(len(hi), dtype=np.bool_)
        hit_hi[inside] = self.hi[at[inside]] == hi[inside]
        found = hit_hi.copy()
        found[hit_hi] = self.lo[at[hit_hi]] == lo[hit_hi]
        # A hi word shared by several fingerprints (astronomically rare): scan its range.
        for i in np.flatnonzero(hit_hi & ~found):
            j = int(at[i])
            while j < len(self.hi) and self.hi[j] == hi[i]:
                if self.lo[j] == lo[i]:
                    found[i] = True
                    break
                j += 1
        return found

    def drop(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _merge(runs: list[_Run]) -> _Run:
    """One run from several sorted ones, by linear merges (no re-sort)."""
    hi, lo = runs[0].hi, runs[0].lo
    for run in runs[1:]:
        at = np.searchsorted(hi, run.hi, side="right") + np.arange(len(run.hi))
        others = np.ones(len(hi) + len(run.hi), dtype=np.bool_)
        others[at] = False
        merged_hi = np.empty(len(others), dtype=np.uint64)
        merged_lo = np.empty(len(others), dtype=np.uint64)
        merged_hi[at], merged_lo[at] = run.hi, run.lo
        merged_hi[others], merged_lo[others] = hi, lo
        hi, lo = merged_hi, merged_lo
    return _Run(hi, lo, max(r.newest_us for r in runs), min(r.oldest_us for r in runs))


class FingerprintIndex:
    """Seen-set of fingerprints over a sliding window, with bounded memory.

    Not thread-safe: the store's single writer thread owns it.
    """

    def __init__(self, *, window_us: int, memory_entries: int, spill_dir: Path) -> None:
        self._window_us = window_us
        self._generation_us = max(1, window_us // GENERATIONS_PER_WINDOW)
        self._memory_entries = memory_entries
        self._spill_dir = spill_dir
        # In-memory runs, oldest first, sizes shrinking: merged like a binary counter.
        self._fresh: list[_Run] = []
        self._runs: list[_Run] = []
        self._names = itertools.count()
        private_dir(spill_dir)
        for stale in spill_dir.glob("run-*.npy"):
            stale.unlink()

    def __len__(self) -> int:
        return self.memory_entries + sum(len(run) for run in self._runs)

    @property
    def memory_entries(self) -> int:
        return sum(len(run) for run in self._fresh)

    @property
    def run_count(self) -> int:
        """Runs spilled to memory-mapped files."""
        return len(self._runs)

    def seen(self, fps: Fingerprints) -> npt.NDArray[np.bool_]:
        """For each fingerprint, whether it is already in the window."""
        found = np.zeros(len(fps), dtype=np.bool_)
        for run in itertools.chain(reversed(self._fresh), reversed(self._runs)):
            if found.all():
                break
            found |= run.contains(fps.hi, fps.lo)
        return found

    def add(self, fps: Fingerprints, now_us: int) -> None:
        """Record committed fingerprints as seen at ``now_us``."""
        if not len(fps):
            return
        hi, lo = _sorted(fps.hi, fps.lo)
        self._fresh.append(_Run(hi, lo, now_us, now_us))
        while len(self._fresh) >= 2 and 2 * len(self._fresh[-1]) >= len(self._fresh[-2]):
            self._fresh[-2:] = [_merge(self._fresh[-2:])]
        oldest = min(run.oldest_us for run in self._fresh)
        if now_us - oldest >= self._generation_us or self.memory_entries >= self._memory_entries:
            self._freeze()
        self.expire(now_us)

    def expire(self, now_us: int) -> None:
        """Forget generations wholly older than the window."""
        horizon = now_us - self._window_us
        for runs in (self._runs, self._fresh):
            for run in [r for r in runs if r.newest_us < horizon]:
                run.drop()
                runs.remove(run)

    def close(self) -> None:
        for run in self._runs:
            run.drop()
        self._runs = []
        self._fresh = []

    def _freeze(self) -> None:
        merged = _merge(self._fresh)
        self._fresh = []
        self._runs.append(self._spill(merged))
        if len(self._runs) > MAX_RUNS:
            first, second = self._runs[0], self._runs[1]
            self._runs[0:2] = [self._spill(_merge([first, second]))]
            first.drop()
            second.drop()

    def _spill(self, run: _Run) -> _Run:
        path = self._spill_dir / f"run-{os.getpid()}-{next(self._names)}.npy"
        with open_private(path) as spill:
            np.save(spill, np.stack([run.hi, run.lo]))
        mapped = np.load(path, mmap_mode="r")
        return _Run(mapped[0], mapped[1], run.newest_us, run.oldest_us, path)
