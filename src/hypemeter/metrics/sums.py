"""Partial sums per (dimensions, bucket), kept as sorted numpy blocks: pure, no I/O.

The one watermark-free index the query caches are made of. Rows arrive in blocks
(a load, or one change set) and each block is sorted by (owner, bucket), so a query
reads a slice of each block. Blocks of similar size are merged (rows of one key
summed) up to ``MERGE_ROWS``, so a block count stays logarithmic in the rows held
(and linear past that size); rows of buckets before ``since_us`` are dropped at
merges, whole blocks once all their buckets are past, and never answered.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Codes = npt.NDArray[np.int32]
Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
NONE = 0  # the code of a missing value in every vocabulary
NO_SAMPLE = np.iinfo(np.int64).min
# Merges run where rows are added (the event loop): a larger block is never rewritten.
MERGE_ROWS = 200_000


class Vocabulary:
    """Strings as small integer codes, in order of first sight; code 0 is None."""

    def __init__(self) -> None:
        self.names: list[str | None] = [None]
        self._codes: dict[str | None, int] = {None: NONE}
        self._sorted: list[str] = []
        self._ranks: Ints = np.zeros(1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def code(self, value: str | None) -> int:
        """The code of ``value``, or -1 when it was never seen."""
        return self._codes.get(value, -1)

    def encode(self, values: Iterable[str | None]) -> Codes:
        """The codes of ``values``, adding the new ones."""
        out = []
        for value in values:
            found = self._codes.get(value)
            if found is None:
                found = self._codes[value] = len(self.names)
                self.names.append(value)
            out.append(found)
        return np.asarray(out, dtype=np.int32)

    def ranks(self) -> Ints:
        """Each code's place in name order (None first)."""
        if len(self._ranks) != len(self.names):
            named = sorted(range(1, len(self.names)), key=lambda c: self.names[c] or "")
            ranks = np.zeros(len(self.names), dtype=np.int64)
            ranks[named] = np.arange(1, len(named) + 1)
            self._ranks = ranks
            self._sorted = [self.names[c] or "" for c in named]
        return self._ranks

    def rank_after(self, value: str) -> int:
        """The smallest rank of a name greater than ``value``."""
        self.ranks()
        return bisect.bisect_right(self._sorted, value) + 1


@dataclass(slots=True)
class Block:
    """Rows of one key layout: dimension codes, bucket, sums, maxima and a sample text.

    ``dims[0]`` is the owner the rows are sorted by (then by bucket): all zeros for
    rows read by time only. A sample is
    the greatest (``maxes['sample_t']``, text) of its rows, as SQL's max of a struct.
    """

    dims: dict[str, Codes]
    bucket: Ints
    sums: dict[str, Floats]
    maxes: dict[str, Ints]
    texts: npt.NDArray[np.object_] | None = None

    def __len__(self) -> int:
        return len(self.bucket)

    def take(self, rows: npt.NDArray[np.intp] | slice) -> Block:
        return Block(
            {k: v[rows] for k, v in self.dims.items()},
            self.bucket[rows],
            {k: v[rows] for k, v in self.sums.items()},
            {k: v[rows] for k, v in self.maxes.items()},
            None if self.texts is None else self.texts[rows],
        )

    @staticmethod
    def concat(blocks: Sequence[Block]) -> Block:
        first = blocks[0]
        if len(blocks) == 1:
            return first
        return Block(
            {k: np.concatenate([b.dims[k] for b in blocks]) for k in first.dims},
            np.concatenate([b.bucket for b in blocks]),
            {k: np.concatenate([b.sums[k] for b in blocks]) for k in first.sums},
            {k: np.concatenate([b.maxes[k] for b in blocks]) for k in first.maxes},
            None
            if first.texts is None
            else np.concatenate([b.texts for b in blocks if b.texts is not None]),
        )


def reduced(block: Block, since_us: int) -> Block:
    """The rows of ``block`` from ``since_us`` on, one per key, sorted by (owner, bucket)."""
    keep = np.flatnonzero(block.bucket >= since_us)
    if len(keep) != len(block):
        block = block.take(keep)
    if not len(block):
        return block
    names = list(block.dims)
    keys: list[npt.NDArray[np.generic]] = []
    if "sample_t" in block.maxes:
        keys.append(block.maxes["sample_t"])  # least significant: a key's last row has max t
    keys += [block.dims[n] for n in reversed(names[1:])]
    keys += [block.bucket, block.dims[names[0]]]
    order = np.lexsort(keys)
    block = block.take(order)
    same = np.ones(len(block) - 1, dtype=np.bool_)
    columns: list[npt.NDArray[np.integer[Any]]] = [block.bucket, *block.dims.values()]
    for column in columns:
        same &= column[1:] == column[:-1]
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    if len(starts) == len(block):
        return block
    ends = np.append(starts[1:], len(block)) - 1
    out = Block(
        {k: v[starts] for k, v in block.dims.items()},
        block.bucket[starts],
        {k: np.add.reduceat(v, starts) for k, v in block.sums.items()},
        {k: np.maximum.reduceat(v, starts) for k, v in block.maxes.items()},
        None if block.texts is None else block.texts[ends],
    )
    if block.texts is not None:
        _settle_ties(block, same, starts, out)
    return out


def _settle_ties(block: Block, same: npt.NDArray[np.bool_], starts: Ints, out: Block) -> None:
    """Where a key's greatest sample time is shared, the greatest text wins."""
    assert block.texts is not None and out.texts is not None
    t = block.maxes["sample_t"]
    tied = np.flatnonzero(same & (t[1:] == t[:-1]) & (t[1:] != NO_SAMPLE))
    for i in tied.tolist():
        group = int(np.searchsorted(starts, i, side="right")) - 1
        if t[i] != out.maxes["sample_t"][group]:
            continue
        other, held = block.texts[i], out.texts[group]
        if other is not None and (held is None or other > held):
            out.texts[group] = other


class BucketLog:
    """Partial rows of one key layout in sorted blocks; see the module docstring."""

    def __init__(self, since_us: int) -> None:
        self.since_us = since_us
        self._checked_us = since_us
        self._blocks: list[Block] = []
        self.version = 0  # bumped by every change of the rows held

    def __len__(self) -> int:
        return sum(len(b) for b in self._blocks)

    def add(self, block: Block) -> None:
        block = reduced(block, self.since_us)
        if not len(block):
            return
        self.version += 1
        self._blocks.append(block)
        while (
            len(self._blocks) > 1
            and len(self._blocks[-2]) <= 2 * len(self._blocks[-1])
            and len(self._blocks[-2]) + len(self._blocks[-1]) <= MERGE_ROWS
        ):
            last = self._blocks.pop()
            self._blocks[-1] = reduced(Block.concat([self._blocks[-1], last]), self.since_us)
        # Blocks too large to merge in passing: whole ones go once their buckets are past.
        if self.since_us > self._checked_us:
            self._checked_us = self.since_us
            self._blocks = [b for b in self._blocks if int(b.bucket.max()) >= self.since_us]

    def compactable(self, blocks: int) -> list[Block] | None:
        """The blocks to merge into one elsewhere, when there are more than ``blocks``:
        all but the newest two, which rows added meanwhile may merge with."""
        return list(self._blocks[:-2]) if len(self._blocks) > max(blocks, 3) else None

    def compacted(self, old: list[Block], merged: Block) -> bool:
        """Put ``merged`` (``old`` merged elsewhere, meanwhile) in place of ``old``, if
        ``old`` are still the first blocks; blocks added since stay after it."""
        held = self._blocks[: len(old)]
        if len(held) != len(old) or any(a is not b for a, b in zip(held, old, strict=True)):
            return False
        self._blocks = (
            [merged, *self._blocks[len(old) :]] if len(merged) else self._blocks[len(old) :]
        )
        self.version += 1
        return True

    def advance(self, since_us: int) -> None:
        """Forget buckets before ``since_us`` (at the next merges)."""
        self.since_us = max(self.since_us, since_us)

    def rows(self, start_us: int, end_us: int, owner: int | None = None) -> Block | None:
        """The rows of buckets in [start_us, end_us) (of one owner), or None if none.

        Rows of every owner of a log with several are found by a scan, not a slice.
        """
        parts = []
        for block in self._blocks:
            owners = block.dims[next(iter(block.dims))]
            if owner is None and len(block) and owners[0] != owners[-1]:
                inside = (block.bucket >= start_us) & (block.bucket < end_us)
                parts.append(block.take(np.flatnonzero(inside)))
                continue
            lo, hi = 0, len(block)
            if owner is not None:
                # In the column's own type: another would convert the whole column.
                wanted = np.array([owner, owner + 1], dtype=owners.dtype)
                lo, hi = (int(i) for i in owners.searchsorted(wanted))
            first, last = (
                lo + int(i)
                for i in block.bucket[lo:hi].searchsorted(np.array([start_us, end_us], np.int64))
            )
            if last > first:
                parts.append(block.take(slice(first, last)))
        parts = [p for p in parts if len(p)]
        return Block.concat(parts) if parts else None


def group_sums(
    digits: Sequence[tuple[Ints, int]], weights: Sequence[Floats]
) -> tuple[list[list[int]], list[list[float]]]:
    """Rows grouped by mixed-radix ``digits`` ((values, base) each): each group's digits
    and its sum of each of ``weights``."""
    key = np.zeros(len(digits[0][0]), dtype=np.int64)
    for values, base in digits:
        key = key * base + values
    groups, group = np.unique(key, return_inverse=True)
    sums = [np.bincount(group, weights=w, minlength=len(groups)).tolist() for w in weights]
    out: list[list[int]] = []
    for group_key in groups.tolist():
        parts = []
        rest = group_key
        for _, base in reversed(digits):
            rest, part = divmod(rest, base)
            parts.append(part)
        out.append(parts[::-1])
    return out, [list(s) for s in zip(*sums, strict=True)] if sums else []
