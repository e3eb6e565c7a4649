"""The statements that fold events into every rollup of the PostgreSQL store.

``rollup_statements`` group a table of events in SQL: a rebuild (the source is
one partition of ``events``), an erasure or a purge (what is left to refold).
A commit groups its events in memory (``rollup_rows``), copies the rows of every
rollup into one staging table and merges them with ``merge_staged``. Both merge a row into a stored
one the same way, and upsert in key order, so concurrent writers lock rollup
rows in one order.
"""

from __future__ import annotations

from hypemeter.backends.cluster.postgres_schema import ROLLUP_KEYS, ROLLUPS
from hypemeter.metrics.model import DAY_US, ENGAGEMENT, HOUR_US, MINUTE_US

_ENGAGEMENT = f"metric IN ({', '.join(repr(m) for m in ENGAGEMENT)})"


def _bucket(width_us: int) -> str:
    return f"(ts_us / {width_us}) * {width_us}"


def _upsert(
    table: str, select: dict[str, str], merges: dict[str, str], source: str, where: str
) -> str:
    """INSERT the grouped ``select`` (column -> expression; keys first) into ``table``."""
    keys = ROLLUP_KEYS[table]
    columns = ", ".join(select)
    expressions = ", ".join(select.values())
    positions = ", ".join(str(n + 1) for n in range(len(keys)))
    updates = ", ".join(f"{column} = {how}" for column, how in merges.items())
    return (
        f"INSERT INTO {table} ({columns}) SELECT {expressions} FROM {source} "
        f"WHERE {where} GROUP BY {positions} ORDER BY {positions} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )


def _named(
    table: str, select: dict[str, str], merges: dict[str, str], source: str, where: str
) -> tuple[str, str]:
    return table, _upsert(table, select, merges, source, where)


def _summed(table: str, *columns: str) -> dict[str, str]:
    return {c: f"{table}.{c} + excluded.{c}" for c in columns}


def rollup_statements(source: str, *, only: frozenset[str] | None = None) -> list[str]:
    """The upserts that fold the events of ``source`` into every rollup (or those named)."""
    return [sql for table, sql in _statements(source) if only is None or table in only]


def _merges() -> dict[str, str]:
    """Each table's ON CONFLICT clause, as ``rollup_statements`` writes it."""
    out: dict[str, str] = {}
    for table, sql in _statements("hm_unused"):
        out[table] = sql[sql.index(" ON CONFLICT ") :]
    return out


STAGED = "hm_in_rollups"


def staged_columns() -> dict[str, str]:
    """The columns of ``STAGED`` (name -> SQL type): ``rollup``, the number of the
    rollup table a row belongs to (its place in ``ROLLUP_TABLES``), then every column
    of every rollup table, each once."""
    out = {"rollup": "smallint"}
    for _, keys, aggregates in ROLLUPS:
        for name, definition in (*keys, *aggregates):
            out.setdefault(name, definition.removesuffix(" NOT NULL"))
    return out


def staging_ddl() -> str:
    """The session's temporary table that a commit copies its grouped rollup rows
    into, made once per connection and emptied at every commit."""
    columns = ", ".join(f"{name} {kind}" for name, kind in staged_columns().items())
    return f"CREATE TEMP TABLE IF NOT EXISTS {STAGED} ({columns}) ON COMMIT DELETE ROWS"


def merge_staged() -> str:
    """The upserts of every rollup's rows from ``STAGED``, as one simple query (one
    round trip). Each table's rows were copied in key order, and a fresh temporary
    table reads back in the order it was written."""
    merges = _merges()
    statements = []
    for number, (table, keys, aggregates) in enumerate(ROLLUPS):
        names = ", ".join(name for name, _ in (*keys, *aggregates))
        statements.append(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {STAGED} "
            f"WHERE rollup = {number}{merges[table]}"
        )
    return ";\n".join(statements)


def _statements(source: str) -> list[tuple[str, str]]:
    statements: list[tuple[str, str]] = []
    for table, width in (
        ("rollup_minute", MINUTE_US),
        ("rollup_hour", HOUR_US),
        ("rollup_day", DAY_US),
    ):
        statements.append(
            _named(
                table,
                {
                    "tenant_id": "tenant_id",
                    "influencer_id": "influencer_id",
                    "metric": "metric",
                    "bucket": _bucket(width),
                    "platform": "platform",
                    "campaign_id": "coalesce(campaign_id, '')",
                    "total": "sum(delta)",
                    "events": "count(*)",
                },
                _summed(table, "total", "events"),
                source,
                "TRUE",
            )
        )
    statements.append(
        _named(
            "rollup_tenant_hour",
            {
                "tenant_id": "tenant_id",
                "metric": "metric",
                "bucket": _bucket(HOUR_US),
                "platform": "platform",
                "campaign_id": "coalesce(campaign_id, '')",
                "total": "sum(delta)",
                "events": "count(*)",
            },
            _summed("rollup_tenant_hour", "total", "events"),
            source,
            "TRUE",
        )
    )
    statements.append(
        _named(
            "rollup_content_hour",
            {
                "tenant_id": "tenant_id",
                "content_id": "content_id",
                "metric": "metric",
                "bucket": _bucket(HOUR_US),
                "influencer_id": "influencer_id",
                "platform": "platform",
                "campaign_id": "coalesce(campaign_id, '')",
                "total": "sum(delta)",
                "events": "count(*)",
            },
            _summed("rollup_content_hour", "total", "events"),
            source,
            "content_id IS NOT NULL",
        )
    )
    # The sample text is the latest one (ties: the greatest text), as in the embedded store.
    newer = (
        "excluded.sample_t IS NOT NULL AND (rollup_engagement_hour.sample_t IS NULL OR "
        "(excluded.sample_t, excluded.sample_text) > "
        "(rollup_engagement_hour.sample_t, rollup_engagement_hour.sample_text))"
    )
    statements.append(
        _named(
            "rollup_engagement_hour",
            {
                "tenant_id": "tenant_id",
                "bucket": _bucket(HOUR_US),
                "content_id": "content_id",
                "platform": "platform",
                "total": "sum(delta)",
                "events": "count(*)",
                "latest": "max(ts_us)",
                "sample_t": "(array_agg(ts_us ORDER BY ts_us DESC, text DESC) "
                "FILTER (WHERE text IS NOT NULL))[1]",
                "sample_text": "(array_agg(text ORDER BY ts_us DESC, text DESC) "
                "FILTER (WHERE text IS NOT NULL))[1]",
            },
            {
                **_summed("rollup_engagement_hour", "total", "events"),
                "latest": "greatest(rollup_engagement_hour.latest, excluded.latest)",
                "sample_t": f"CASE WHEN {newer} THEN excluded.sample_t "
                "ELSE rollup_engagement_hour.sample_t END",
                "sample_text": f"CASE WHEN {newer} THEN excluded.sample_text "
                "ELSE rollup_engagement_hour.sample_text END",
            },
            source,
            f"content_id IS NOT NULL AND {_ENGAGEMENT}",
        )
    )
    statements.append(
        _named(
            "rollup_engagement_tags_hour",
            {
                "tenant_id": "tenant_id",
                "bucket": "bucket",
                "content_id": "content_id",
                "platform": "platform",
                "tag": "tag",
                "n": "count(*)",
            },
            _summed("rollup_engagement_tags_hour", "n"),
            f"(SELECT tenant_id, {_bucket(HOUR_US)} AS bucket, content_id, platform, "
            f"unnest(tags) AS tag FROM {source} WHERE content_id IS NOT NULL "
            f"AND {_ENGAGEMENT} AND cardinality(tags) > 0) AS tagged",
            "TRUE",
        )
    )
    return statements
