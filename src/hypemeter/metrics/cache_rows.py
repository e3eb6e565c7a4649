"""Arrow tables (a cache load, a change set) as the rows the cache windows add."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.changes.codec import ChangeSet
from hypemeter.metrics.engagement_window import EngagementRows, EngagementWindow, TagRows
from hypemeter.metrics.model import ENGAGEMENT, HOUR_US
from hypemeter.metrics.ports import CacheLoad
from hypemeter.metrics.sums import NO_SAMPLE, Floats, Ints
from hypemeter.metrics.windows import (
    Column,
    CounterRows,
    CounterWindow,
)

_ENGAGEMENT = pa.array(ENGAGEMENT, pa.string())
_USED = ["influencer_id", "platform", "content_id", "campaign_id", "metric", "delta", "ts"]
_USED += ["text", "tags"]


def column(values: pa.Array | pa.ChunkedArray) -> Column:
    """A string column as its distinct values and each row's index (nulls: None)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values.cast(pa.string()))
    distinct: list[str | None] = [*encoded.dictionary.to_pylist(), None]
    index = pc.fill_null(encoded.indices, len(distinct) - 1)
    return Column(distinct, np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.int64))


def _ints(values: pa.Array | pa.ChunkedArray, missing: int = 0) -> Ints:
    return np.asarray(pc.fill_null(values, missing).to_numpy(zero_copy_only=False), dtype=np.int64)


def _floats(values: pa.Array | pa.ChunkedArray) -> Floats:
    return np.asarray(pc.fill_null(values, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)


def _texts(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.object_]:
    return np.asarray(values.to_pylist(), dtype=object)


def loaded(load: CacheLoad, since_us: int) -> tuple[CounterWindow, EngagementWindow]:
    """Windows from ``since_us`` on, initialized from a load (run off the event loop)."""
    counters = CounterWindow(since_us)
    engagement = EngagementWindow(since_us)
    t = load.counters
    if t.num_rows:
        counters.add(
            CounterRows(
                column(t["tenant_id"]),
                column(t["influencer_id"]),
                column(t["platform"]),
                column(t["campaign_id"]),
                column(t["metric"]),
                _ints(t["bucket"]),
                _floats(t["total"]),
                _floats(t["events"]),
            )
        )
    e = load.engagement
    if e.num_rows:
        engagement.add(
            EngagementRows(
                column(e["tenant_id"]),
                column(e["content_id"]),
                column(e["platform"]),
                _ints(e["bucket"]),
                _floats(e["total"]),
                _floats(e["events"]),
                _ints(e["latest"]),
                _ints(e["sample_t"], NO_SAMPLE),
                _texts(e["sample_text"]),
            )
        )
    g = load.tags
    if g.num_rows:
        engagement.add_tags(
            TagRows(
                column(g["tenant_id"]),
                column(g["content_id"]),
                column(g["platform"]),
                column(g["tag"]),
                _ints(g["bucket"]),
                _floats(g["n"]),
            )
        )
    return counters, engagement


def add_changes(
    counters: CounterWindow, engagement: EngagementWindow, changes: Sequence[ChangeSet]
) -> None:
    """Add change sets, those of one tenant as one table (fewer, larger steps)."""
    tables: dict[str, list[pa.Table]] = {}
    for change in changes:
        table = change.table.select(_USED).replace_schema_metadata(None)
        tables.setdefault(change.tenant_id, []).append(table)
    for tenant_id, parts in tables.items():
        add_change(counters, engagement, tenant_id, pa.concat_tables(parts))


def add_change(
    counters: CounterWindow, engagement: EngagementWindow, tenant_id: str, table: pa.Table
) -> None:
    """Add one change set's events (kept events, snapshots as their deltas)."""
    if not table.num_rows:
        return
    ts = _ints(pc.cast(table["ts"], pa.int64()))
    bucket = ts - ts % HOUR_US
    delta = _floats(table["delta"])

    def tenant(n: int) -> Column:
        return Column([tenant_id], np.zeros(n, dtype=np.int64))

    counters.add(
        CounterRows(
            tenant(table.num_rows),
            column(table["influencer_id"]),
            column(table["platform"]),
            column(table["campaign_id"]),
            column(table["metric"]),
            bucket,
            delta,
            np.ones(table.num_rows, dtype=np.float64),
        )
    )
    engaged = pc.and_(
        pc.is_in(table["metric"], value_set=_ENGAGEMENT), pc.is_valid(table["content_id"])
    )
    rows = np.flatnonzero(pc.fill_null(engaged, False).to_numpy(zero_copy_only=False))
    if not len(rows):
        return
    picked = table.take(pa.array(rows))
    has_text = pc.is_valid(picked["text"]).to_numpy(zero_copy_only=False)
    engagement.add(
        EngagementRows(
            tenant(len(rows)),
            column(picked["content_id"]),
            column(picked["platform"]),
            bucket[rows],
            delta[rows],
            np.ones(len(rows), dtype=np.float64),
            ts[rows],
            np.where(has_text, ts[rows], NO_SAMPLE),
            _texts(picked["text"]),
        )
    )
    tags = picked["tags"].combine_chunks()
    flat = pc.list_flatten(tags)
    if len(flat):
        parents = np.asarray(pc.list_parent_indices(tags).to_numpy(), dtype=np.int64)
        engagement.add_tags(
            TagRows(
                tenant(len(flat)),
                column(picked["content_id"].take(pa.array(parents))),
                column(picked["platform"].take(pa.array(parents))),
                column(flat),
                bucket[rows][parents],
                np.ones(len(flat), dtype=np.float64),
            )
        )
