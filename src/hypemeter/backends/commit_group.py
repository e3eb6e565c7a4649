"""The commit logic both stores share, written once.

A group commit takes the appends that queued up together and: lays them out as one
table with each row's tenant in front (``group_table``); after the store has decided
which rows it keeps (its own id index), folds each kept snapshot reading into a delta
against the previous reading of its series (``kept_readings``, ``fold_readings``: the
store supplies the previous readings, from memory or under row locks); and answers
each append with its counts and its kept events (``per_append``). The stores differ
only in where ids and readings live and how rows reach disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.events.batch import EventBatch, tables_in_order
from hypemeter.events.model import Reading, snapshot_delta
from hypemeter.events.ports import AppendResult

# A snapshot series: tenant, influencer, platform, content ('' for an account), metric.
SeriesKey = tuple[str, str, str, str, str]
SERIES_COLUMNS = ("tenant_id", "influencer_id", "platform", "content_id", "metric")


def group_table(appends: Sequence[tuple[str, EventBatch]]) -> tuple[pa.Table, list[int]]:
    """The appends' events as one single-chunk table with a ``tenant_id`` column in
    front, and each append's size. Work on it is done once for the whole group: many
    one-event appends (SDK traffic) cost about what one batch of as many costs."""
    tables = tables_in_order([batch for _, batch in appends])
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
    sizes = [len(batch) for _, batch in appends]
    owner = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(len(appends), dtype=np.int32), sizes)),
        pa.array([tenant for tenant, _ in appends], pa.string()),
    )
    return table.add_column(0, "tenant_id", owner.dictionary_decode()), sizes


def kept_readings(
    table: pa.Table, keep: np.ndarray[Any, np.dtype[np.bool_]]
) -> tuple[np.ndarray[Any, np.dtype[np.intp]], list[SeriesKey], list[Reading]]:
    """The kept snapshot rows of a group table: their positions, series and readings."""
    snapshot = pc.equal(table.column("kind"), "snapshot").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(np.asarray(snapshot, dtype=np.bool_) & keep)
    if not len(rows):
        return rows, [], []
    picked = table.take(pa.array(rows))
    columns = [picked.column(name).to_pylist() for name in SERIES_COLUMNS]
    keys: list[SeriesKey] = [
        (tenant, influencer, platform, content or "", metric)
        for tenant, influencer, platform, content, metric in zip(*columns, strict=True)
    ]
    stamps = picked.column("ts").cast(pa.int64()).to_pylist()
    values = picked.column("value").to_pylist()
    readings = [Reading(ts, value) for ts, value in zip(stamps, values, strict=True)]
    return rows, keys, readings


def fold_readings(
    keys: Sequence[SeriesKey],
    readings: Sequence[Reading],
    previous: Callable[[SeriesKey], Reading | None],
) -> tuple[list[float], dict[SeriesKey, Reading]]:
    """Each reading's delta against the reading before it in its series (``previous``
    gives what the store held; readings of one group follow each other in order), and
    the state every series ends in."""
    state: dict[SeriesKey, Reading] = {}
    deltas: list[float] = []
    for key, reading in zip(keys, readings, strict=True):
        delta, state[key] = snapshot_delta(state[key] if key in state else previous(key), reading)
        deltas.append(delta)
    return deltas, state


def with_deltas(
    table: pa.Table,
    keep: np.ndarray[Any, np.dtype[np.bool_]],
    rows: np.ndarray[Any, np.dtype[np.intp]],
    deltas: Sequence[float],
) -> pa.Table:
    """The kept rows, in order, with a ``delta`` column: the value, or for a snapshot
    its delta. What a commit stores and what its change sets carry."""
    values = np.asarray(table.column("value").to_numpy(zero_copy_only=False), dtype=np.float64)
    column = values.copy()
    column[rows] = deltas
    staged = table.append_column("delta", pa.array(column, pa.float64()))
    return staged if keep.all() else staged.filter(pa.array(keep))


def per_append(
    keep: np.ndarray[Any, np.dtype[np.bool_]],
    sizes: Sequence[int],
    kept: pa.Table,
    seq: int,
    committed_us: int,
) -> list[AppendResult]:
    """Each append's counts and its kept events (a slice of ``kept``, which holds the
    group's kept rows in order)."""
    counts = np.asarray(sizes, dtype=np.int64)
    ends = np.cumsum(counts)
    before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    accepted = (before[ends] - before[ends - counts]).tolist()
    results: list[AppendResult] = []
    offset = 0
    for size, taken in zip(counts.tolist(), accepted, strict=True):
        results.append(
            AppendResult(taken, size - taken, seq, kept.slice(offset, taken), committed_us)
        )
        offset += taken
    return results
