"""Read queries of the PostgreSQL store.

Rollups are updated in the transaction that stores their events, so a query
reads them for the whole buckets of its range and the raw events only for the
ragged ends (see ``metrics.model.cover``); every statement runs in one snapshot.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pyarrow as pa

from hypemeter.backends.sql import counter_answer
from hypemeter.metrics.model import ENGAGEMENT, AccountReadings, Grain, cover, grains_up_to
from hypemeter.metrics.queries import (
    Answer,
    CounterQuery,
    CounterRow,
    Filters,
    GaugeQuery,
    GaugeRow,
    TrendingQuery,
    TrendingRow,
    UserRow,
)

TOP_TAGS = 3
_GRAIN_TABLES = {Grain.MINUTE: "rollup_minute", Grain.HOUR: "rollup_hour", Grain.DAY: "rollup_day"}


class _Where:
    """A WHERE clause whose parameters are numbered into a shared list."""

    def __init__(self, params: list[Any]) -> None:
        self.parts: list[str] = []
        self.params = params

    def arg(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def eq(self, column: str, value: Any) -> _Where:
        self.parts.append(f"{column} = {self.arg(value)}")
        return self

    def any_of(self, column: str, values: tuple[str, ...] | list[str]) -> _Where:
        self.parts.append(f"{column} = ANY({self.arg(list(values))}::text[])")
        return self

    def raw(self, clause: str) -> _Where:
        self.parts.append(clause)
        return self

    def span(self, column: str, start_us: int, end_us: int) -> _Where:
        return self.raw(f"{column} >= {int(start_us)} AND {column} < {int(end_us)}")

    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"


def _filters(where: _Where, filters: Filters) -> _Where:
    if filters.influencer_id is not None:
        where.eq("influencer_id", filters.influencer_id)
    if filters.platform is not None:
        where.eq("platform", filters.platform)
    if filters.campaign_id is not None:
        where.eq("campaign_id", filters.campaign_id)
    if filters.content_id is not None:
        where.eq("content_id", filters.content_id)
    return where


def _bucket(column: str, grain: Grain | None) -> str:
    return "NULL::bigint" if grain is None else f"({column} / {grain.us}) * {grain.us}"


def _piece_table(grain: Grain, q: CounterQuery) -> str:
    """The smallest rollup that can answer one piece of a counter query."""
    if "content_id" in q.by or q.filters.content_id is not None:
        return "rollup_content_hour"
    tenant_wide = q.filters.influencer_id is None and "influencer_id" not in q.by
    if tenant_wide and grain is not Grain.MINUTE:
        return "rollup_tenant_hour"
    return _GRAIN_TABLES[grain]


async def counters(con: asyncpg.Connection, tenant_id: str, q: CounterQuery) -> Answer[CounterRow]:
    if "content_id" in q.by or q.filters.content_id is not None:
        grains: tuple[Grain, ...] = (
            (Grain.HOUR,) if q.grain is None or q.grain.us >= Grain.HOUR.us else ()
        )
    else:
        grains = grains_up_to(q.grain)
    dims = list(q.by)
    head = "".join(f"{d}, " for d in dims)
    params: list[Any] = []
    selects: list[str] = []
    for piece in cover(q.start_us, q.end_us, grains):
        where = _Where(params).eq("tenant_id", tenant_id).any_of("metric", q.metrics)
        _filters(where, q.filters)
        if piece.grain is None:
            where.span("ts_us", piece.start_us, piece.end_us)
            for dim in dims:
                if dim in {"campaign_id", "content_id"}:
                    where.raw(f"{dim} IS NOT NULL")
            selects.append(
                f"SELECT {head}{_bucket('ts_us', q.grain)} AS b, metric, sum(delta) AS total, "
                f"count(*) AS events, count(*) AS n FROM events WHERE {where.sql()} "
                f"GROUP BY {head}b, metric"
            )
        else:
            where.span("bucket", piece.start_us, piece.end_us)
            if "campaign_id" in dims:
                where.raw("campaign_id <> ''")
            selects.append(
                f"SELECT {head}{_bucket('bucket', q.grain)} AS b, metric, sum(total) AS total, "
                f"sum(events) AS events, count(*) AS n FROM {_piece_table(piece.grain, q)} "
                f"WHERE {where.sql()} GROUP BY {head}b, metric"
            )
    if not selects:
        return Answer([], 0)
    sql = (
        f"SELECT {head}b, metric, sum(total), sum(events), sum(n) FROM ("
        + " UNION ALL ".join(selects)
        + f") AS pieces GROUP BY {head}b, metric"
    )
    rows = await con.fetch(sql, *params)
    return counter_answer(rows, len(dims))


async def gauges(con: asyncpg.Connection, tenant_id: str, q: GaugeQuery) -> Answer[GaugeRow]:
    """Per account and gauge metric: last reading <= start, first inside, last per bucket.

    Readings are few (one per account and poll), so they are read from the raw
    snapshot events through their partial index.
    """
    params: list[Any] = []
    selects: list[str] = []
    account = "influencer_id, platform, metric"
    parts = (
        # (part, range, bucketed, newest first)
        ("at_start", 0, q.start_us + 1, False, True),
        ("first", q.start_us, q.end_us, False, False),
        ("last", q.start_us, q.end_us, True, True),
    )
    for part, lo, hi, bucketed, newest in parts:
        where = _Where(params).eq("tenant_id", tenant_id).any_of("metric", q.metrics)
        where.raw("kind = 'snapshot'").span("ts_us", lo, hi)
        if q.influencer_ids is not None:
            if q.influencer_ids:
                where.any_of("influencer_id", q.influencer_ids)
            else:
                where.raw("FALSE")
        if q.platform is not None:
            where.eq("platform", q.platform)
        bucket = _bucket("ts_us", q.grain if bucketed else None)
        order = "DESC" if newest else "ASC"
        selects.append(
            f"(SELECT DISTINCT ON ({account}, b) '{part}' AS part, {account}, {bucket} AS b, "
            f"ts_us, value FROM events WHERE {where.sql()} "
            f"ORDER BY {account}, b, ts_us {order}, value {order})"
        )
    rows = await con.fetch(" UNION ALL ".join(selects), *params)
    accounts: dict[tuple[str, str, str], AccountReadings] = {}
    for part, influencer, platform, metric, bucket, ts_us, value in rows:
        readings = accounts.setdefault((influencer, platform, metric), AccountReadings())
        point = (int(ts_us), float(value))
        if part == "at_start":
            readings.at_start = point
        elif part == "first":
            readings.first = point
        else:
            readings.bucket_last[q.start_us if bucket is None else int(bucket)] = point
    out = [GaugeRow(i, p, m, readings) for (i, p, m), readings in accounts.items()]
    return Answer(out, len(rows))


async def unique_users(
    con: asyncpg.Connection,
    tenant_id: str,
    start_us: int,
    end_us: int,
    filters: Filters,
    grain: Grain | None,
    by: str | None,
    engagement_metrics: tuple[str, ...],
) -> Answer[tuple[str | None, int | None, int]]:
    """Exact distinct user ids, from the raw events."""
    params: list[Any] = []
    where = _Where(params).eq("tenant_id", tenant_id).any_of("metric", engagement_metrics)
    where.span("ts_us", start_us, end_us).raw("user_id IS NOT NULL")
    _filters(where, filters)
    group = "NULL::text"
    if by is not None:
        group = by
        where.raw(f"{by} IS NOT NULL")
    rows = await con.fetch(
        f"SELECT {group} AS g, {_bucket('ts_us', grain)} AS b, count(DISTINCT user_id), "
        f"count(*) FROM events WHERE {where.sql()} GROUP BY 1, 2",
        *params,
    )
    return Answer(
        [(g, None if b is None else int(b), int(n)) for g, b, n, _ in rows],
        sum(int(r[3]) for r in rows),
    )


async def trending(
    con: asyncpg.Connection, tenant_id: str, q: TrendingQuery
) -> Answer[TrendingRow]:
    """One page of content items by engagement; whole hours come from the hourly rollup."""
    params: list[Any] = []
    stats: list[str] = []
    tags: list[str] = []
    for piece in cover(q.start_us, q.end_us, (Grain.HOUR,)):
        where = _Where(params).eq("tenant_id", tenant_id)
        if q.platform is not None:
            where.eq("platform", q.platform)
        if piece.grain is not None:
            where.span("bucket", piece.start_us, piece.end_us)
            stats.append(
                "SELECT content_id, events AS n, total, latest, sample_t, sample_text "
                f"FROM rollup_engagement_hour WHERE {where.sql()}"
            )
            tags.append(
                f"SELECT content_id, tag, n FROM rollup_engagement_tags_hour WHERE {where.sql()}"
            )
        else:
            where.span("ts_us", piece.start_us, piece.end_us).any_of("metric", ENGAGEMENT)
            where.raw("content_id IS NOT NULL")
            stats.append(
                "SELECT content_id, 1 AS n, delta AS total, ts_us AS latest, "
                "CASE WHEN text IS NOT NULL THEN ts_us END AS sample_t, text AS sample_text "
                f"FROM events WHERE {where.sql()}"
            )
            tags.append(
                "SELECT content_id, unnest(tags) AS tag, 1 AS n FROM events "
                f"WHERE {where.sql()} AND cardinality(tags) > 0"
            )
    if not stats:
        return Answer([], 0)
    page = _Where(params)
    minimum = page.arg(q.min_interactions)
    after = "TRUE"
    if q.after is not None:
        total, content = page.arg(q.after[0]), page.arg(q.after[1])
        after = f"(total < {total} OR (total = {total} AND content_id > {content}))"
    limit = page.arg(q.limit)
    sql = (
        "WITH src AS (" + " UNION ALL ".join(stats) + "), "
        "s AS (SELECT content_id, sum(n) AS n, sum(total) AS total, max(latest) AS latest, "
        f"count(*) AS r FROM src GROUP BY content_id HAVING sum(n) >= {minimum}), "
        f"page AS (SELECT * FROM s WHERE {after} ORDER BY total DESC, content_id LIMIT {limit}), "
        "sm AS (SELECT DISTINCT ON (content_id) content_id, sample_text FROM src "
        "WHERE sample_text IS NOT NULL AND content_id IN (SELECT content_id FROM page) "
        "ORDER BY content_id, sample_t DESC, sample_text DESC), "
        "t AS (SELECT content_id, tag, sum(n) AS n FROM (" + " UNION ALL ".join(tags) + ") AS x "
        "WHERE content_id IN (SELECT content_id FROM page) GROUP BY content_id, tag), "
        f"top AS (SELECT content_id, (array_agg(tag ORDER BY n DESC, tag))[1:{TOP_TAGS}] AS tags "
        "FROM t GROUP BY content_id) "
        "SELECT page.content_id, page.n, page.total, page.latest, sm.sample_text, "
        "coalesce(top.tags, '{}'::text[]), (SELECT sum(r) FROM s) "
        "FROM page LEFT JOIN top USING (content_id) LEFT JOIN sm USING (content_id) "
        "ORDER BY page.total DESC, page.content_id"
    )
    rows = await con.fetch(sql, *params)
    out = [
        TrendingRow(c, int(n), float(total), int(latest), text, tuple(tag_list))
        for c, n, total, latest, text, tag_list, _ in rows
    ]
    return Answer(out, int(rows[0][6]) if rows else 0)


async def user_activity(
    con: asyncpg.Connection,
    tenant_id: str,
    since_us: int,
    min_engagement: float,
    engagement_metrics: tuple[str, ...],
    after: tuple[float, str] | None,
    limit: int,
) -> Answer[UserRow]:
    params: list[Any] = []
    where = _Where(params).eq("tenant_id", tenant_id).any_of("metric", engagement_metrics)
    where.raw(f"ts_us >= {int(since_us)} AND user_id IS NOT NULL")
    having = [f"sum(delta) >= {where.arg(min_engagement)}"]
    if after is not None:
        total, user = where.arg(after[0]), where.arg(after[1])
        having.append(f"(sum(delta) < {total} OR (sum(delta) = {total} AND user_id > {user}))")
    rows = await con.fetch(
        "SELECT user_id, count(*), sum(delta), array_agg(DISTINCT platform ORDER BY platform), "
        f"max(ts_us) FROM events WHERE {where.sql()} GROUP BY user_id "
        f"HAVING {' AND '.join(having)} ORDER BY sum(delta) DESC, user_id "
        f"LIMIT {where.arg(limit)}",
        *params,
    )
    out = [
        UserRow(u, int(n), float(total), tuple(platforms), int(last))
        for u, n, total, platforms, last in rows
    ]
    return Answer(out, sum(r.interactions for r in out))


_LOADS = {
    "counters": (
        "SELECT tenant_id, influencer_id, platform, nullif(campaign_id, '') AS campaign_id, "
        "metric, bucket, sum(total) AS total, sum(events)::double precision AS events "
        "FROM rollup_hour WHERE bucket >= $1 AND events > 0 "
        "GROUP BY tenant_id, influencer_id, platform, campaign_id, metric, bucket"
    ),
    "engagement": (
        "SELECT tenant_id, content_id, platform, bucket, total, "
        "events::double precision AS events, latest, sample_t, sample_text "
        "FROM rollup_engagement_hour WHERE bucket >= $1"
    ),
    "tags": (
        "SELECT tenant_id, content_id, platform, bucket, tag, n::double precision AS n "
        "FROM rollup_engagement_tags_hour WHERE bucket >= $1"
    ),
}
_TYPES = {
    "bucket": pa.int64(),
    "latest": pa.int64(),
    "sample_t": pa.int64(),
    "total": pa.float64(),
    "events": pa.float64(),
    "n": pa.float64(),
}


async def cache_tables(con: asyncpg.Connection, since_us: int) -> tuple[pa.Table, ...]:
    """(counters, engagement, tags) of ``CacheLoad`` from ``since_us`` on, in the
    connection's snapshot (rollups change in the transaction of their events)."""
    out = []
    for sql in _LOADS.values():
        statement = await con.prepare(sql)
        names = [a.name for a in statement.get_attributes()]
        rows = await statement.fetch(since_us)
        out.append(
            pa.table(
                {
                    name: pa.array([r[i] for r in rows], _TYPES.get(name, pa.string()))
                    for i, name in enumerate(names)
                }
            )
        )
    return tuple(out)
