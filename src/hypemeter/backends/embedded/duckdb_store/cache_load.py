"""The query caches' load from the embedded store: hourly rollups and the raw events
committed after the fold watermark, in one pinned snapshot (see ``CacheLoad``)."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.metrics.model import ENGAGEMENT, HOUR_US

_HOUR = f"(epoch_us(ts) // {HOUR_US}) * {HOUR_US}"
_ENGAGED = f"metric IN ({', '.join(repr(m) for m in ENGAGEMENT)}) AND content_id IS NOT NULL"


def cache_tables(
    con: duckdb.DuckDBPyConnection, since_us: int, watermark: int
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(counters, engagement, tags) from ``since_us`` on, as of the connection's snapshot,
    whose fold watermark is ``watermark``. (Only integers are put into the SQL.)"""
    raw = f"seq > {int(watermark)} AND epoch_us(ts) >= {int(since_us)}"
    counters = con.sql(
        "SELECT tenant_id, influencer_id, platform, nullif(campaign_id, '') AS campaign_id, "  # noqa: S608
        "metric, bucket, sum(total) AS total, sum(events)::DOUBLE AS events FROM ("
        "SELECT tenant_id, influencer_id, platform, campaign_id, metric, bucket, total, events "
        f"FROM rollup_hour WHERE bucket >= {int(since_us)} AND events > 0 "
        "UNION ALL SELECT tenant_id, influencer_id, platform, coalesce(campaign_id, ''), "
        f"metric, {_HOUR}, delta, 1 FROM events WHERE {raw}) GROUP BY ALL"
    ).to_arrow_table()
    engagement = con.sql(
        "SELECT tenant_id, content_id, platform, bucket, sum(total) AS total, "  # noqa: S608
        "sum(events)::DOUBLE AS events, max(latest) AS latest, max(sample) AS sample FROM ("
        "SELECT tenant_id, content_id, platform, bucket, total, events, latest, sample "
        f"FROM rollup_engagement_hour WHERE bucket >= {int(since_us)} "
        f"UNION ALL SELECT tenant_id, content_id, platform, {_HOUR}, delta, 1, epoch_us(ts), "
        "CASE WHEN text IS NULL THEN NULL ELSE {'t': epoch_us(ts), 'text': text} END "
        f"FROM events WHERE {raw} AND {_ENGAGED}) GROUP BY ALL"
    ).to_arrow_table()
    sample = engagement["sample"].combine_chunks()
    engagement = engagement.drop_columns(["sample"])
    engagement = engagement.append_column("sample_t", pc.struct_field(sample, "t"))
    engagement = engagement.append_column("sample_text", pc.struct_field(sample, "text"))
    tags = con.sql(
        "SELECT tenant_id, content_id, platform, bucket, tag, sum(n)::DOUBLE AS n FROM ("  # noqa: S608
        "SELECT tenant_id, content_id, platform, bucket, tag, n FROM rollup_engagement_tags_hour "
        f"WHERE bucket >= {int(since_us)} UNION ALL "
        f"SELECT tenant_id, content_id, platform, {_HOUR}, unnest(tags), 1 FROM events "
        f"WHERE {raw} AND {_ENGAGED} AND len(tags) > 0) GROUP BY ALL"
    ).to_arrow_table()
    return counters, engagement, tags
