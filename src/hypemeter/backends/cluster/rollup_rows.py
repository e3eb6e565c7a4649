"""The rollup rows of one commit's events, grouped in memory.

A commit folds its events into every rollup with one upsert per rollup row: the
events are grouped here (Arrow's hash group-by) into exactly the rows that the
SQL of ``rollup_sql.rollup_statements`` would group, so PostgreSQL only merges
them into the stored rows. Each table's rows come out in key order (byte order,
as the "C" collation), so concurrent commits lock rollup rows in one order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.backends.cluster.postgres_schema import ROLLUP_KEYS
from hypemeter.metrics.model import DAY_US, ENGAGEMENT, HOUR_US, MINUTE_US

# The columns of the events a fold reads.
FOLD_COLUMNS = (
    "tenant_id",
    "influencer_id",
    "platform",
    "content_id",
    "campaign_id",
    "metric",
    "delta",
    "ts_us",
    "text",
    "tags",
)
_ENGAGEMENT = pa.array(ENGAGEMENT, pa.string())
_ACCOUNT_TABLES = (("rollup_minute", "minute"), ("rollup_hour", "hour"), ("rollup_day", "day"))


def bucket(ts_us: np.ndarray[Any, np.dtype[np.int64]], width_us: int) -> pa.Array:
    """``(ts_us / width) * width`` in SQL's integer division, which truncates toward zero."""
    return pa.array(ts_us - np.fmod(ts_us, width_us), pa.int64())


def fold(events: pa.Table) -> dict[str, pa.Table]:
    """Every rollup table's rows for ``events`` (columns ``FOLD_COLUMNS``), each table's
    columns in its schema order, rows in key order; tables with no row are left out."""
    ts = np.asarray(events.column("ts_us").to_numpy(), dtype=np.int64)
    base = pa.table(
        {
            "tenant_id": events.column("tenant_id"),
            "influencer_id": events.column("influencer_id"),
            "metric": events.column("metric"),
            "platform": events.column("platform"),
            "campaign_id": pc.coalesce(events.column("campaign_id"), pa.scalar("", pa.string())),
            "content_id": events.column("content_id"),
            "minute": bucket(ts, MINUTE_US),
            "hour": bucket(ts, HOUR_US),
            "day": bucket(ts, DAY_US),
            "delta": events.column("delta"),
            "ts_us": pa.array(ts, pa.int64()),
            "text": events.column("text"),
            "tags": events.column("tags"),
        }
    )
    out: dict[str, pa.Table] = {}
    for table, grain in _ACCOUNT_TABLES:
        out[table] = _counted(base, table, {"bucket": grain})
    out["rollup_tenant_hour"] = _counted(base, "rollup_tenant_hour", {"bucket": "hour"})
    content = base.filter(pc.is_valid(base.column("content_id")))
    out["rollup_content_hour"] = _counted(content, "rollup_content_hour", {"bucket": "hour"})
    engaged = content.filter(pc.is_in(content.column("metric"), value_set=_ENGAGEMENT))
    out["rollup_engagement_hour"] = _engagement(engaged)
    out["rollup_engagement_tags_hour"] = _tags(engaged)
    return {name: rows for name, rows in out.items() if rows.num_rows}


def _renamed(table: pa.Table, names: dict[str, str]) -> pa.Table:
    return table.rename_columns([names.get(name, name) for name in table.column_names])


def _sorted(table: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    return table.sort_by([(key, "ascending") for key in keys])


def _counted(base: pa.Table, table: str, renames: dict[str, str]) -> pa.Table:
    """total = sum(delta), events = count(*) per key of ``table``."""
    keys = ROLLUP_KEYS[table]
    source = {renames.get(key, key): key for key in keys}  # source column -> key
    grouped = base.group_by(list(source), use_threads=False).aggregate(
        [("delta", "sum"), ("delta", "count")]
    )
    grouped = _renamed(grouped, {**source, "delta_sum": "total", "delta_count": "events"})
    return _sorted(grouped.select([*keys, "total", "events"]), keys)


def _engagement(engaged: pa.Table) -> pa.Table:
    """Totals, the latest event time and the latest text (ties: the greatest) per key.

    The rows are sorted by key, then latest first, then greatest text first (null texts
    last), and grouped in that order (one thread): the first non-null text of a group is
    its sample. The groups are then sorted by key.
    """
    keys = ROLLUP_KEYS["rollup_engagement_hour"]
    source = [("hour" if key == "bucket" else key) for key in keys]
    texted = pc.if_else(
        pc.is_valid(engaged.column("text")), engaged.column("ts_us"), pa.scalar(None, pa.int64())
    )
    order = [(key, "ascending") for key in source]
    latest_first = engaged.append_column("sample_t", texted).sort_by(
        [*order, ("ts_us", "descending"), ("text", "descending")]
    )
    grouped = latest_first.group_by(source, use_threads=False).aggregate(
        [
            ("delta", "sum"),
            ("delta", "count"),
            ("ts_us", "max"),
            ("sample_t", "first"),
            ("text", "first"),
        ]
    )
    grouped = _renamed(
        grouped,
        {
            "hour": "bucket",
            "delta_sum": "total",
            "delta_count": "events",
            "ts_us_max": "latest",
            "sample_t_first": "sample_t",
            "text_first": "sample_text",
        },
    )
    columns = [*keys, "total", "events", "latest", "sample_t", "sample_text"]
    return _sorted(grouped.select(columns), keys)


def _tags(engaged: pa.Table) -> pa.Table:
    """n = how many times each tag was on an engagement event, per key."""
    keys = ROLLUP_KEYS["rollup_engagement_tags_hour"]
    tags = engaged.column("tags").combine_chunks()
    if not len(tags) or not len(pc.list_flatten(tags)):
        return pa.table({})
    parents = pc.list_parent_indices(tags)
    tagged = pa.table(
        {
            "tenant_id": engaged.column("tenant_id").take(parents),
            "bucket": engaged.column("hour").take(parents),
            "content_id": engaged.column("content_id").take(parents),
            "platform": engaged.column("platform").take(parents),
            "tag": pc.list_flatten(tags),
        }
    )
    grouped = tagged.group_by(list(keys), use_threads=False).aggregate([("tag", "count")])
    grouped = _renamed(grouped, {"tag_count": "n"})
    return _sorted(grouped.select([*keys, "n"]), keys)
