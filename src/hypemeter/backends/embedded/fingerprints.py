"""The embedded dedup index: which (tenant, event_id) were seen within the window.

Each id is reduced to a 128-bit fingerprint, MD5(event_id) XOR MD5(tenant)
(``hypemeter.events.batch.fingerprint``).
Two distinct ids share a fingerprint with probability about n^2 / 2^129
(below 1e-20 for a billion ids in the window), the same odds UUIDs rely on;
below that, a new event is never reported as a duplicate.

Memory stays bounded whatever the window holds: the newest ids sit in an
in-memory set of at most ``memory_entries``; older generations are frozen
into sorted runs written to memory-mapped files, which the kernel pages in
and out as needed. Runs are a cache: the store rebuilds them from its own
rows at start-up, so they are never the source of truth.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

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

    def pairs(self) -> list[tuple[int, int]]:
        """(hi, lo) of each fingerprint as Python ints."""
        return list(zip(self.hi.tolist(), self.lo.tolist(), strict=True))

    def take(self, positions: list[int]) -> Fingerprints:
        index = np.asarray(positions, dtype=np.int64)
        return Fingerprints(self.hi[index], self.lo[index])


@dataclass(slots=True)
class _Run:
    hi: U64
    lo: U64
    newest_us: int
    path: Path

    def contains(self, hi: U64, lo: U64) -> npt.NDArray[np.bool_]:
        left = np.searchsorted(self.hi, hi, side="left")
        right = np.searchsorted(self.hi, hi, side="right")
        width = right - left
        found = np.zeros(len(hi), dtype=np.bool_)
        single = width == 1
        found[single] = self.lo[left[single]] == lo[single]
        for i in np.nonzero(width > 1)[0]:
            found[i] = bool((self.lo[left[i] : right[i]] == lo[i]).any())
        return found


class FingerprintIndex:
    """Seen-set of fingerprints over a sliding window, with bounded memory.

    Not thread-safe: the store's single writer thread owns it.
    """

    def __init__(self, *, window_us: int, memory_entries: int, spill_dir: Path) -> None:
        self._window_us = window_us
        self._generation_us = max(1, window_us // GENERATIONS_PER_WINDOW)
        self._memory_entries = memory_entries
        self._spill_dir = spill_dir
        # hi word -> lo word; the rare second fingerprint sharing a hi word goes to _mem_extra.
        self._mem: dict[int, int] = {}
        self._mem_extra: set[tuple[int, int]] = set()
        self._mem_hi: list[U64] = []
        self._mem_lo: list[U64] = []
        self._mem_first_us: int | None = None
        self._mem_newest_us = 0
        self._runs: list[_Run] = []
        self._names = itertools.count()
        spill_dir.mkdir(parents=True, exist_ok=True)
        for stale in spill_dir.glob("run-*.npy"):
            stale.unlink()

    def __len__(self) -> int:
        return self.memory_entries + sum(len(run.hi) for run in self._runs)

    @property
    def memory_entries(self) -> int:
        return len(self._mem) + len(self._mem_extra)

    @property
    def run_count(self) -> int:
        return len(self._runs)

    def seen(self, fps: Fingerprints) -> npt.NDArray[np.bool_]:
        """For each fingerprint, whether it is already in the window."""
        get = self._mem.get
        extra = self._mem_extra
        found = np.fromiter(
            (get(h) == low or (h, low) in extra for h, low in fps.pairs()),
            dtype=np.bool_,
            count=len(fps),
        )
        for run in self._runs:
            if found.all():
                break
            found |= run.contains(fps.hi, fps.lo)
        return found

    def add(self, fps: Fingerprints, now_us: int) -> None:
        """Record committed fingerprints as seen at ``now_us``."""
        if not len(fps):
            return
        if self._mem_first_us is None:
            self._mem_first_us = now_us
        mem = self._mem
        for h, low in fps.pairs():
            if mem.setdefault(h, low) != low:
                self._mem_extra.add((h, low))
        self._mem_hi.append(fps.hi)
        self._mem_lo.append(fps.lo)
        self._mem_newest_us = max(self._mem_newest_us, now_us)
        aged = now_us - self._mem_first_us >= self._generation_us
        if aged or self.memory_entries >= self._memory_entries:
            self._freeze()
        self.expire(now_us)

    def expire(self, now_us: int) -> None:
        """Forget generations wholly older than the window."""
        horizon = now_us - self._window_us
        keep: list[_Run] = []
        for run in self._runs:
            if run.newest_us < horizon:
                run.path.unlink(missing_ok=True)
            else:
                keep.append(run)
        self._runs = keep

    def close(self) -> None:
        for run in self._runs:
            run.path.unlink(missing_ok=True)
        self._runs = []
        self._mem.clear()
        self._mem_extra.clear()

    def _freeze(self) -> None:
        hi = np.concatenate(self._mem_hi)
        lo = np.concatenate(self._mem_lo)
        self._runs.append(self._write_run(hi, lo, self._mem_newest_us))
        self._mem = {}
        self._mem_extra = set()
        self._mem_hi, self._mem_lo = [], []
        self._mem_first_us = None
        self._mem_newest_us = 0
        if len(self._runs) > MAX_RUNS:
            self._merge_oldest()

    def _write_run(self, hi: U64, lo: U64, newest_us: int) -> _Run:
        order = np.lexsort((lo, hi))
        pairs = np.stack([hi[order], lo[order]])
        path = self._spill_dir / f"run-{os.getpid()}-{next(self._names)}.npy"
        np.save(path, pairs)
        mapped = np.load(path, mmap_mode="r")
        return _Run(hi=mapped[0], lo=mapped[1], newest_us=newest_us, path=path)

    def _merge_oldest(self) -> None:
        first, second = self._runs[0], self._runs[1]
        merged = self._write_run(
            np.concatenate([first.hi, second.hi]),
            np.concatenate([first.lo, second.lo]),
            max(first.newest_us, second.newest_us),
        )
        first.path.unlink(missing_ok=True)
        second.path.unlink(missing_ok=True)
        self._runs[0:2] = [merged]
