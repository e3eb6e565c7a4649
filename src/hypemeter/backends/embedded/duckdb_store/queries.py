"""Read queries of the embedded store, each run in one snapshot on a reader connection.

A query reads the rollups for the pieces of its range that whole buckets
cover (see ``metrics.model.cover``) and the raw events for the rest: the
ragged ends of the range, and events committed after the rollup watermark.
Timestamps are inlined as literals so that DuckDB's zone maps can skip the
row groups outside the range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import duckdb

from hypemeter.backends.embedded.duckdb_store.rollups import (
    CONTENT_HOUR,
    CONTENT_TAGS_HOUR,
    GRAIN_TABLES,
    watermark,
)
from hypemeter.backends.ports import (
    Answer,
    CounterQuery,
    CounterRow,
    Filters,
    GaugeQuery,
    GaugeRow,
    TrendingRow,
    UserRow,
)
from hypemeter.metrics.model import (
    AccountReadings,
    Grain,
    Piece,
    cover,
    format_instant,
    grains_up_to,
)

TOP_TAGS = 3
R = TypeVar("R")


def _ts(us: int) -> str:
    return f"TIMESTAMPTZ '{format_instant(us)}'"


class _Where:
    """A WHERE clause with positional parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def eq(self, column: str, value: Any) -> _Where:
        self.parts.append(f"{column} = ?")
        self.params.append(value)
        return self

    def any_of(self, column: str, values: Sequence[Any]) -> _Where:
        self.parts.append(f"{column} IN ({', '.join('?' for _ in values)})")
        self.params.extend(values)
        return self

    def raw(self, clause: str) -> _Where:
        self.parts.append(clause)
        return self

    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"


def _raw_spans(pieces: list[Piece], start_us: int, end_us: int, w: int) -> list[str]:
    """Conditions selecting the raw events a cover needs besides its rollup pieces."""
    spans = [
        f"seq <= {w} AND ts >= {_ts(p.start_us)} AND ts < {_ts(p.end_us)}"
        for p in pieces
        if p.grain is None
    ]
    if any(p.grain is not None for p in pieces):
        spans.append(f"seq > {w} AND ts >= {_ts(start_us)} AND ts < {_ts(end_us)}")
    return spans


def _bucket_expr(column: str, grain: Grain | None) -> str:
    return "NULL::BIGINT" if grain is None else f"({column} // {grain.us}) * {grain.us}"


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    return con.execute(sql, params).fetchall()


def _in_snapshot(con: duckdb.DuckDBPyConnection, body: Callable[[int], R]) -> R:
    """Run ``body(watermark)`` in one transaction, so rollups and raw events agree."""
    con.execute("BEGIN TRANSACTION")
    try:
        return body(watermark(con))
    finally:
        con.execute("COMMIT")


def _filters(where: _Where, filters: Filters) -> _Where:
    if filters.influencer_id is not None:
        where.eq("influencer_id", filters.influencer_id)
    if filters.platform is not None:
        where.eq("platform", filters.platform)
    if filters.campaign_id is not None:
        where.eq("campaign_id", filters.campaign_id)
    return where


def counters(con: duckdb.DuckDBPyConnection, tenant_id: str, q: CounterQuery) -> Answer[CounterRow]:
    by_content = "content_id" in q.by
    if by_content:
        grains: tuple[Grain, ...] = (
            (Grain.HOUR,) if q.grain is None or q.grain.us >= Grain.HOUR.us else ()
        )
    else:
        grains = grains_up_to(q.grain)
    pieces = cover(q.start_us, q.end_us, grains)
    dims = list(q.by)
    group = ", ".join([*dims, "b", "metric"])

    def body(w: int) -> Answer[CounterRow]:
        selects: list[str] = []
        params: list[Any] = []
        for piece in pieces:
            if piece.grain is None:
                continue
            table = CONTENT_HOUR.name if by_content else GRAIN_TABLES[piece.grain.value].name
            where = _Where().eq("tenant_id", tenant_id).any_of("metric", q.metrics)
            where.raw(f"bucket >= {piece.start_us} AND bucket < {piece.end_us}")
            _filters(where, q.filters)
            if "campaign_id" in dims:
                where.raw("campaign_id <> ''")
            selects.append(
                f"SELECT {', '.join(dims) + ', ' if dims else ''}"
                f"{_bucket_expr('bucket', q.grain)} AS b, metric, sum(total) AS total, "
                f"sum(events) AS events, count(*) AS n FROM {table} "
                f"WHERE {where.sql()} GROUP BY ALL"
            )
            params += where.params
        for span in _raw_spans(pieces, q.start_us, q.end_us, w):
            where = _Where().eq("tenant_id", tenant_id).any_of("metric", q.metrics).raw(span)
            _filters(where, q.filters)
            for dim in dims:
                if dim in {"campaign_id", "content_id"}:
                    where.raw(f"{dim} IS NOT NULL")
            selects.append(
                f"SELECT {', '.join(dims) + ', ' if dims else ''}"
                f"{_bucket_expr('epoch_us(ts)', q.grain)} AS b, metric, sum(delta) AS total, "
                f"count(*) AS events, count(*) AS n FROM events "
                f"WHERE {where.sql()} GROUP BY ALL"
            )
            params += where.params
        sql = (
            f"SELECT {group}, sum(total), sum(events), sum(n) FROM ("
            + " UNION ALL ".join(selects)
            + f") GROUP BY {group}"
        )
        rows = _run(con, sql, params)
        width = len(dims)
        out = [
            CounterRow(
                tuple(r[:width]),
                None if r[width] is None else int(r[width]),
                r[width + 1],
                float(r[width + 2]),
                int(r[width + 3]),
            )
            for r in rows
        ]
        return Answer(out, sum(int(r[width + 4]) for r in rows))

    return _in_snapshot(con, body)


def gauges(con: duckdb.DuckDBPyConnection, tenant_id: str, q: GaugeQuery) -> Answer[GaugeRow]:
    """Per account and gauge metric: last reading <= start, first inside, last per bucket."""
    parts = (
        # (part, range, grains, aggregate over rollups, over raw, bucketed)
        ("at_start", 0, q.start_us + 1, grains_up_to(None), "max(last)", "max", False),
        ("first", q.start_us, q.end_us, grains_up_to(None), "min(first)", "min", False),
        ("last", q.start_us, q.end_us, grains_up_to(q.grain), "max(last)", "max", True),
    )

    def body(w: int) -> Answer[GaugeRow]:
        selects: list[str] = []
        params: list[Any] = []
        for part, lo, hi, grains, rollup_agg, raw_agg, bucketed in parts:
            pieces = cover(lo, hi, grains)
            grain = q.grain if bucketed else None
            for piece in pieces:
                if piece.grain is None:
                    continue
                where = _Where().eq("tenant_id", tenant_id).any_of("metric", q.metrics)
                where.raw(f"bucket >= {piece.start_us} AND bucket < {piece.end_us}")
                where.raw("last IS NOT NULL")
                _account_filters(where, q)
                selects.append(
                    f"SELECT '{part}' AS part, influencer_id, platform, metric, "
                    f"{_bucket_expr('bucket', grain)} AS b, {rollup_agg} AS r, count(*) AS n "
                    f"FROM {GRAIN_TABLES[piece.grain.value].name} "
                    f"WHERE {where.sql()} GROUP BY ALL"
                )
                params += where.params
            for span in _raw_spans(pieces, lo, hi, w):
                where = _Where().eq("tenant_id", tenant_id).any_of("metric", q.metrics)
                where.raw(span).raw("kind = 'snapshot'")
                _account_filters(where, q)
                selects.append(
                    f"SELECT '{part}' AS part, influencer_id, platform, metric, "
                    f"{_bucket_expr('epoch_us(ts)', grain)} AS b, "
                    f"{raw_agg}({{'t': epoch_us(ts), 'v': value}}) AS r, count(*) AS n "
                    f"FROM events WHERE {where.sql()} GROUP BY ALL"
                )
                params += where.params
        if not selects:
            return Answer([], 0)
        sql = (
            "SELECT part, influencer_id, platform, metric, b, "
            "CASE WHEN part = 'first' THEN min(r) ELSE max(r) END, sum(n) FROM ("
            + " UNION ALL ".join(selects)
            + ") GROUP BY part, influencer_id, platform, metric, b"
        )
        rows = _run(con, sql, params)
        accounts: dict[tuple[str, str, str], AccountReadings] = {}
        for part, influencer, platform, metric, bucket, reading, _ in rows:
            account = accounts.setdefault((influencer, platform, metric), AccountReadings())
            point = (int(reading["t"]), float(reading["v"]))
            if part == "at_start":
                account.at_start = point
            elif part == "first":
                account.first = point
            else:
                account.bucket_last[q.start_us if bucket is None else int(bucket)] = point
        out = [GaugeRow(i, p, m, readings) for (i, p, m), readings in accounts.items()]
        return Answer(out, sum(int(r[6]) for r in rows))

    return _in_snapshot(con, body)


def _account_filters(where: _Where, q: GaugeQuery) -> None:
    if q.influencer_ids is not None:
        if not q.influencer_ids:
            where.raw("FALSE")
        else:
            where.any_of("influencer_id", q.influencer_ids)
    if q.platform is not None:
        where.eq("platform", q.platform)


def unique_users(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    start_us: int,
    end_us: int,
    filters: Filters,
    grain: Grain | None,
    by: str | None,
    engagement_metrics: tuple[str, ...],
) -> Answer[tuple[str | None, int | None, int]]:
    """Exact distinct user ids, from the raw events."""
    where = _Where().eq("tenant_id", tenant_id).any_of("metric", engagement_metrics)
    where.raw(f"ts >= {_ts(start_us)} AND ts < {_ts(end_us)} AND user_id IS NOT NULL")
    _filters(where, filters)
    group = "NULL::VARCHAR"
    if by is not None:
        group = by
        where.raw(f"{by} IS NOT NULL")
    rows = _run(
        con,
        f"SELECT {group} AS g, {_bucket_expr('epoch_us(ts)', grain)} AS b, "
        f"count(DISTINCT user_id), count(*) FROM events WHERE {where.sql()} "
        "GROUP BY ALL",
        where.params,
    )
    return Answer(
        [(g, None if b is None else int(b), int(n)) for g, b, n, _ in rows],
        sum(int(r[3]) for r in rows),
    )


def trending(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    start_us: int,
    end_us: int,
    platform: str | None,
    min_interactions: int,
    engagement_metrics: tuple[str, ...],
) -> Answer[TrendingRow]:
    pieces = cover(start_us, end_us, (Grain.HOUR,))

    def body(w: int) -> Answer[TrendingRow]:
        stats: list[str] = []
        tags: list[str] = []
        params: list[Any] = []
        tag_params: list[Any] = []
        for piece in pieces:
            if piece.grain is None:
                continue
            where = _Where().eq("tenant_id", tenant_id).any_of("metric", engagement_metrics)
            where.raw(f"bucket >= {piece.start_us} AND bucket < {piece.end_us}")
            if platform is not None:
                where.eq("platform", platform)
            stats.append(
                "SELECT content_id, sum(events) AS n, sum(total) AS total, max(latest) AS latest, "
                f"max(sample) AS sample, count(*) AS r FROM {CONTENT_HOUR.name} "
                f"WHERE {where.sql()} GROUP BY ALL"
            )
            params += where.params
            tags.append(
                f"SELECT content_id, tag, sum(n) AS n FROM {CONTENT_TAGS_HOUR.name} "
                f"WHERE {where.sql()} GROUP BY ALL"
            )
            tag_params += where.params
        for span in _raw_spans(pieces, start_us, end_us, w):
            where = _Where().eq("tenant_id", tenant_id).any_of("metric", engagement_metrics)
            where.raw(span).raw("content_id IS NOT NULL")
            if platform is not None:
                where.eq("platform", platform)
            stats.append(
                "SELECT content_id, count(*) AS n, sum(delta) AS total, "
                "max(epoch_us(ts)) AS latest, "
                "max({'t': epoch_us(ts), 'text': text}) FILTER (WHERE text IS NOT NULL) "
                f"AS sample, count(*) AS r FROM events WHERE {where.sql()} "
                "GROUP BY ALL"
            )
            params += where.params
            tags.append(
                "SELECT content_id, tag, count(*) AS n FROM (SELECT content_id, "
                f"unnest(tags) AS tag FROM events WHERE {where.sql()}) GROUP BY ALL"
            )
            tag_params += where.params
        if not stats:
            return Answer([], 0)
        sql = (
            "WITH s AS (SELECT content_id, sum(n) AS n, sum(total) AS total, "
            "max(latest) AS latest, max(sample) AS sample, sum(r) AS r FROM ("
            + " UNION ALL ".join(stats)
            + ") GROUP BY content_id HAVING sum(n) >= ?), "
            "t AS (SELECT content_id, tag, sum(n) AS n FROM ("
            + " UNION ALL ".join(tags)
            + ") WHERE content_id IN (SELECT content_id FROM s) GROUP BY ALL), "
            "top AS (SELECT content_id, list(tag ORDER BY n DESC, tag) AS tags FROM t "
            "GROUP BY content_id) "
            "SELECT s.content_id, s.n, s.total, s.latest, s.sample.text, "
            f"coalesce(top.tags[1:{TOP_TAGS}], []), s.r "
            "FROM s LEFT JOIN top USING (content_id)"
        )
        rows = _run(con, sql, [*params, min_interactions, *tag_params])
        out = [
            TrendingRow(c, int(n), float(total), int(latest), text, tuple(tag_list))
            for c, n, total, latest, text, tag_list, _ in rows
        ]
        return Answer(out, sum(int(r[6]) for r in rows))

    return _in_snapshot(con, body)


def user_activity(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    since_us: int,
    min_engagement: float,
    engagement_metrics: tuple[str, ...],
    after: tuple[float, str] | None,
    limit: int,
) -> Answer[UserRow]:
    where = _Where().eq("tenant_id", tenant_id).any_of("metric", engagement_metrics)
    where.raw(f"ts >= {_ts(since_us)} AND user_id IS NOT NULL")
    having = ["sum(delta) >= ?"]
    params = [*where.params, min_engagement]
    if after is not None:
        having.append("(sum(delta) < ? OR (sum(delta) = ? AND user_id > ?))")
        params += [after[0], after[0], after[1]]
    rows = _run(
        con,
        "SELECT user_id, count(*), sum(delta), list(DISTINCT platform ORDER BY platform), "
        f"max(epoch_us(ts)) FROM events WHERE {where.sql()} GROUP BY user_id "
        f"HAVING {' AND '.join(having)} ORDER BY sum(delta) DESC, user_id LIMIT ?",
        [*params, limit],
    )
    out = [
        UserRow(u, int(n), float(total), tuple(platforms), int(last))
        for u, n, total, platforms, last in rows
    ]
    return Answer(out, sum(r.interactions for r in out))
