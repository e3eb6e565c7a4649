"""The statements that fold events into every rollup of the PostgreSQL store.

``rollup_statements`` group a table of events in SQL: a rebuild (the source is
one partition of ``events``), an erasure or a purge (what is left to refold).
A commit groups its events in memory (``rollup_rows``) and merges the rows with
``upsert_rows``, one statement per rollup table. Both merge a row into a stored
one the same way, and upsert in key order, so concurrent writers lock rollup
rows in one order.
"""

from __future__ import annotations

from hypemeter.backends.cluster.postgres_schema import ROLLUP_KEYS, ROLLUP_TABLES
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


def staging_table(table: str) -> str:
    """The session's temporary table that a commit copies one rollup's grouped rows into."""
    return f"hm_in_{table}"


def staging_ddl() -> list[str]:
    """The temporary tables of ``staging_table``, made once per connection; emptied at
    every commit."""
    return [
        f"CREATE TEMP TABLE IF NOT EXISTS {staging_table(table)} (LIKE {table}) "
        "ON COMMIT DELETE ROWS"
        for table in ROLLUP_TABLES
    ]


def upsert_staged() -> dict[str, str]:
    """Per rollup table, the upsert of the grouped rows copied into its staging table
    (in key order: a fresh temporary table is read back in the order it was written)."""
    merges = _merges()
    out: dict[str, str] = {}
    for table in ROLLUP_TABLES:
        out[table] = f"INSERT INTO {table} SELECT * FROM {staging_table(table)}{merges[table]}"
    return out


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
