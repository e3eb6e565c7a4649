"""Read queries of the embedded store, each run in one snapshot on a reader connection.

A query reads the rollups for the pieces of its range that whole buckets
cover (see ``metrics.model.cover``) and the raw events for the rest: the
ragged ends of the range, and events committed after the rollup watermark.
Timestamps are inlined as literals so that DuckDB's zone maps can skip the
row groups outside the range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from hypemeter.backends.embedded.duckdb_store.rollups import (
    CONTENT_HOUR,
    ENGAGEMENT_HOUR,
    ENGAGEMENT_TAGS_HOUR,
    GRAIN_TABLES,
    TENANT_HOUR,
)
from hypemeter.backends.sql import counter_answer
from hypemeter.metrics.model import (
    ENGAGEMENT,
    AccountReadings,
    Grain,
    Piece,
    cover,
    format_instant,
    grains_up_to,
)
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


@dataclass(frozen=True, slots=True)
class Horizon:
    """What the caller knew of the rollups before the query started.

    ``folded`` is a watermark the rollups had already reached (the statement's
    own snapshot may be further: it reads the exact one from ``meta``, and the
    known one only lets DuckDB skip older row groups). ``complete`` says every
    event committed before the query was already folded: the raw tail then
    holds nothing the answer needs.
    """

    folded: int
    complete: bool
    committed: int = 0


_WATERMARK = "(SELECT value::BIGINT FROM meta WHERE key = 'rollup_seq')"


def _raw_spans(pieces: list[Piece], horizon: Horizon) -> list[str]:
    """Conditions selecting the raw events a cover needs besides its rollup pieces.

    The ragged ends are read raw whatever their seq; the middle, read from the
    rollups, adds the events above the watermark of the statement's snapshot.
    """
    spans = [f"ts >= {_ts(p.start_us)} AND ts < {_ts(p.end_us)}" for p in pieces if p.grain is None]
    middle = [p for p in pieces if p.grain is not None]
    if middle and not horizon.complete:
        spans.append(
            f"seq > {horizon.folded} AND seq > {_WATERMARK} "
            f"AND ts >= {_ts(middle[0].start_us)} AND ts < {_ts(middle[-1].end_us)}"
        )
    return spans


def _bucket_expr(column: str, grain: Grain | None) -> str:
    return "NULL::BIGINT" if grain is None else f"({column} // {grain.us}) * {grain.us}"


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    return con.execute(sql, params).fetchall()


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


def _piece_table(grain: Grain, q: CounterQuery) -> str:
    """The smallest rollup table that can answer one piece of a counter query."""
    if "content_id" in q.by or q.filters.content_id is not None:
        return CONTENT_HOUR.name
    tenant_wide = q.filters.influencer_id is None and "influencer_id" not in q.by
    if tenant_wide and grain is not Grain.MINUTE:
        return TENANT_HOUR.name
    return GRAIN_TABLES[grain.value].name


def counters(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    q: CounterQuery,
    horizon: Horizon,
) -> Answer[CounterRow]:
    """Counter sums from the rollups (and the raw events they do not cover)."""
    if "content_id" in q.by or q.filters.content_id is not None:
        grains: tuple[Grain, ...] = (
            (Grain.HOUR,) if q.grain is None or q.grain.us >= Grain.HOUR.us else ()
        )
    else:
        grains = grains_up_to(q.grain)
    dims = list(q.by)
    selects, params = _counter_selects(tenant_id, q, cover(q.start_us, q.end_us, grains), horizon)
    if not selects:
        return Answer([], 0)
    group = ", ".join([*dims, "b", "metric"])
    sql = (
        selects[0]
        if len(selects) == 1
        else f"SELECT {group}, sum(total), sum(events), sum(n) FROM ("
        + " UNION ALL ".join(selects)
        + f") GROUP BY {group}"
    )
    return counter_answer(_run(con, sql, params), len(dims))


def _counter_selects(
    tenant_id: str, q: CounterQuery, pieces: list[Piece], horizon: Horizon
) -> tuple[list[str], list[Any]]:
    """One SELECT per rollup piece and raw span, and their parameters."""
    dims = list(q.by)
    head = ", ".join(dims) + ", " if dims else ""
    selects: list[str] = []
    params: list[Any] = []
    for piece in pieces:
        if piece.grain is None:
            continue
        where = _Where().eq("tenant_id", tenant_id).any_of("metric", q.metrics)
        where.raw(f"bucket >= {piece.start_us} AND bucket < {piece.end_us}")
        _filters(where, q.filters)
        if "campaign_id" in dims:
            where.raw("campaign_id <> ''")
        selects.append(
            f"SELECT {head}{_bucket_expr('bucket', q.grain)} AS b, metric, sum(total) AS total, "
            f"sum(events) AS events, count(*) AS n FROM {_piece_table(piece.grain, q)} "
            f"WHERE {where.sql()} GROUP BY ALL"
        )
        params += where.params
    for span in _raw_spans(pieces, horizon):
        where = _Where().eq("tenant_id", tenant_id).any_of("metric", q.metrics).raw(span)
        _filters(where, q.filters)
        for dim in dims:
            if dim in {"campaign_id", "content_id"}:
                where.raw(f"{dim} IS NOT NULL")
        selects.append(
            f"SELECT {head}{_bucket_expr('epoch_us(ts)', q.grain)} AS b, metric, "
            "sum(delta) AS total, count(*) AS events, count(*) AS n FROM events "
            f"WHERE {where.sql()} GROUP BY ALL"
        )
        params += where.params
    return selects, params


def gauges(
    con: duckdb.DuckDBPyConnection, tenant_id: str, q: GaugeQuery, horizon: Horizon
) -> Answer[GaugeRow]:
    """Per account and gauge metric: last reading <= start, first inside, last per bucket."""
    parts = (
        # (part, range, grains, aggregate over rollups, over raw, bucketed)
        ("at_start", 0, q.start_us + 1, grains_up_to(None), "max(last)", "max", False),
        ("first", q.start_us, q.end_us, grains_up_to(None), "min(first)", "min", False),
        ("last", q.start_us, q.end_us, grains_up_to(q.grain), "max(last)", "max", True),
    )
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
        for span in _raw_spans(pieces, horizon):
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
    q: TrendingQuery,
    horizon: Horizon,
) -> Answer[TrendingRow]:
    """One page of content items by engagement; the sums come from hourly rollups."""
    pieces = cover(q.start_us, q.end_us, (Grain.HOUR,))
    stats: list[str] = []
    tags: list[str] = []
    params: list[Any] = []
    tag_params: list[Any] = []
    samples: list[str] = []
    engagement = ENGAGEMENT
    for piece in pieces:
        if piece.grain is None:
            continue
        where = _Where().eq("tenant_id", tenant_id)
        where.raw(f"bucket >= {piece.start_us} AND bucket < {piece.end_us}")
        if q.platform is not None:
            where.eq("platform", q.platform)
        stats.append(
            "SELECT content_id, events AS n, total, latest, 1 AS r "
            f"FROM {ENGAGEMENT_HOUR.name} WHERE {where.sql()}"
        )
        params += where.params
        samples.append(f"SELECT content_id, sample FROM {ENGAGEMENT_HOUR.name} WHERE {where.sql()}")
        tags.append(
            f"SELECT content_id, tag, n FROM {ENGAGEMENT_TAGS_HOUR.name} WHERE {where.sql()}"
        )
        tag_params += where.params
    for span in _raw_spans(pieces, horizon):
        where = _Where().eq("tenant_id", tenant_id).any_of("metric", engagement)
        where.raw(span).raw("content_id IS NOT NULL")
        if q.platform is not None:
            where.eq("platform", q.platform)
        stats.append(
            "SELECT content_id, 1 AS n, delta AS total, epoch_us(ts) AS latest, "
            f"1 AS r FROM events WHERE {where.sql()}"
        )
        params += where.params
        samples.append(
            "SELECT content_id, {'t': epoch_us(ts), 'text': text} AS sample FROM events "
            f"WHERE {where.sql()} AND text IS NOT NULL"
        )
        tags.append(
            "SELECT content_id, unnest(tags) AS tag, 1 AS n FROM events "
            f"WHERE {where.sql()} AND len(tags) > 0"
        )
        tag_params += where.params
    if not stats:
        return Answer([], 0)
    after = "TRUE"
    page_params: list[Any] = []
    if q.after is not None:
        after = "(total < ? OR (total = ? AND content_id > ?))"
        page_params = [q.after[0], q.after[0], q.after[1]]
    # The sample text and the tags are looked for in the page's items only.
    sql = (
        "WITH s AS (SELECT content_id, sum(n) AS n, sum(total) AS total, "
        "max(latest) AS latest, sum(r) AS r FROM ("
        + " UNION ALL ".join(stats)
        + ") GROUP BY content_id HAVING sum(n) >= ?), "
        f"page AS (SELECT * FROM s WHERE {after} ORDER BY total DESC, content_id LIMIT ?), "
        "sm AS (SELECT content_id, max(sample) AS sample FROM ("
        + " UNION ALL ".join(samples)
        + ") WHERE content_id IN (SELECT content_id FROM page) GROUP BY content_id), "
        "t AS (SELECT content_id, tag, sum(n) AS n FROM ("
        + " UNION ALL ".join(tags)
        + ") WHERE content_id IN (SELECT content_id FROM page) GROUP BY content_id, tag), "
        "top AS (SELECT content_id, list(tag ORDER BY n DESC, tag) AS tags FROM t "
        "GROUP BY content_id) "
        "SELECT page.content_id, page.n, page.total, page.latest, sm.sample.text, "
        f"coalesce(top.tags[1:{TOP_TAGS}], []), (SELECT sum(r) FROM s) "
        "FROM page LEFT JOIN top USING (content_id) LEFT JOIN sm USING (content_id) "
        "ORDER BY page.total DESC, page.content_id"
    )
    rows = _run(
        con,
        sql,
        [*params, q.min_interactions, *page_params, q.limit, *tag_params, *tag_params],
    )
    out = [
        TrendingRow(c, int(n), float(total), int(latest), text, tuple(tag_list))
        for c, n, total, latest, text, tag_list, _ in rows
    ]
    return Answer(out, int(rows[0][6]) if rows else 0)


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
