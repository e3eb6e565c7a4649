"""The PostgreSQL schema of the cluster store and its migration.

Every process runs ``migrate`` at start-up; an advisory lock makes concurrent
starts take turns, and each step is idempotent. Raw events live in monthly
partitions of ``events`` (by event time), created on demand. Text columns use
the "C" collation so that orderings (cursors, ties) are byte order, as in the
embedded store, whatever the database's locale.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

SCHEMA_VERSION = "1"
# pg_advisory_lock keys: the migration, and partition creation.
MIGRATION_LOCK = 0x48_59_50_45_01
PARTITION_LOCK = 0x48_59_50_45_02

T = 'text COLLATE "C"'

# Rollups, all maintained in the transaction that stores their events.
# (name, key columns, aggregate columns, extra index or None)
_ACCOUNT = (
    ("tenant_id", T),
    ("influencer_id", T),
    ("metric", T),
    ("bucket", "bigint"),
    ("platform", T),
    ("campaign_id", T),
)
_COUNTED = (("total", "double precision NOT NULL"), ("events", "bigint NOT NULL"))

ROLLUPS: tuple[tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]], ...] = (
    ("rollup_minute", _ACCOUNT, _COUNTED),
    ("rollup_hour", _ACCOUNT, _COUNTED),
    ("rollup_day", _ACCOUNT, _COUNTED),
    (
        "rollup_tenant_hour",
        (
            ("tenant_id", T),
            ("metric", T),
            ("bucket", "bigint"),
            ("platform", T),
            ("campaign_id", T),
        ),
        _COUNTED,
    ),
    (
        "rollup_content_hour",
        (
            ("tenant_id", T),
            ("content_id", T),
            ("metric", T),
            ("bucket", "bigint"),
            ("influencer_id", T),
            ("platform", T),
            ("campaign_id", T),
        ),
        _COUNTED,
    ),
    (
        "rollup_engagement_hour",
        (("tenant_id", T), ("bucket", "bigint"), ("content_id", T), ("platform", T)),
        (
            *_COUNTED,
            ("latest", "bigint NOT NULL"),
            ("sample_t", "bigint"),
            ("sample_text", T),
        ),
    ),
    (
        "rollup_engagement_tags_hour",
        (
            ("tenant_id", T),
            ("bucket", "bigint"),
            ("content_id", T),
            ("platform", T),
            ("tag", T),
        ),
        (("n", "bigint NOT NULL"),),
    ),
)
ROLLUP_KEYS = {name: tuple(column for column, _ in keys) for name, keys, _ in ROLLUPS}


def _rollup_ddl() -> list[str]:
    out = []
    for name, keys, aggregates in ROLLUPS:
        columns = [f"{c} {kind} NOT NULL" for c, kind in keys]
        columns += [f"{c} {kind}" for c, kind in aggregates]
        columns.append(f"PRIMARY KEY ({', '.join(c for c, _ in keys)})")
        out.append(f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(columns)})")
    return out


def add_column(table: str, column: str, definition: str) -> str:
    """Add a column to a table made before it. Looked up first: ``ADD COLUMN IF NOT
    EXISTS`` would take an exclusive lock on the live table at every start. The names
    are constants of this module, never input."""
    return (
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns "  # noqa: S608
        f"WHERE table_schema = current_schema() AND table_name = '{table}' "
        f"AND column_name = '{column}') THEN "
        f"ALTER TABLE {table} ADD COLUMN {column} {definition}; END IF; END $$"
    )


DDL = [
    f"CREATE TABLE IF NOT EXISTS hm_meta (key {T} PRIMARY KEY, value text NOT NULL)",
    # One row: the number of the last commit of events. Its update is the last
    # statement of every commit, so commits are numbered in the order they become
    # visible and a snapshot that sees seq N sees exactly the commits 1..N.
    "CREATE TABLE IF NOT EXISTS hm_seq (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL)",
    "INSERT INTO hm_seq VALUES (1, 0) ON CONFLICT DO NOTHING",
    f"CREATE TABLE IF NOT EXISTS tenants (tenant_id {T} PRIMARY KEY, "
    "created_at_us bigint NOT NULL)",
    f"""CREATE TABLE IF NOT EXISTS api_keys (
        key_id {T} PRIMARY KEY, tenant_id {T} NOT NULL, key_hash text NOT NULL UNIQUE,
        scopes text[] NOT NULL, name text NOT NULL, created_at_us bigint NOT NULL,
        revoked_at_us bigint)""",
    # Added later: keys of schemas made before it have no limits (NULL).
    add_column("api_keys", "limits", "text"),
    f"""CREATE TABLE IF NOT EXISTS value_limits (
        tenant_id {T} NOT NULL, metric {T} NOT NULL, max_delta double precision NOT NULL,
        max_snapshot double precision NOT NULL, PRIMARY KEY (tenant_id, metric))""",
    f"""CREATE TABLE IF NOT EXISTS stream_tokens (
        subscription_id {T} PRIMARY KEY, tenant_id {T} NOT NULL, key_id {T} NOT NULL,
        token_hash text NOT NULL UNIQUE, filter text NOT NULL, metrics text[] NOT NULL,
        expires_us bigint NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS stream_tokens_key ON stream_tokens (key_id)",
    # Added later: schemas made before it gain the column, their tokens without the right.
    add_column("stream_tokens", "tail", "boolean NOT NULL DEFAULT false"),
    f"""CREATE TABLE IF NOT EXISTS custom_metrics (
        tenant_id {T} NOT NULL, name {T} NOT NULL, kind text NOT NULL,
        PRIMARY KEY (tenant_id, name))""",
    f"""CREATE TABLE IF NOT EXISTS registry (
        tenant_id {T} NOT NULL, kind {T} NOT NULL, entity_id {T} NOT NULL,
        doc text NOT NULL, keys text NOT NULL, search text NOT NULL,
        updated_us bigint NOT NULL, PRIMARY KEY (tenant_id, kind, entity_id))""",
    f"""CREATE TABLE IF NOT EXISTS emv_rates (
        tenant_id {T} NOT NULL, platform {T} NOT NULL, metric {T} NOT NULL,
        value double precision NOT NULL, PRIMARY KEY (tenant_id, platform, metric))""",
    # Exact deduplication, forever: one row per (tenant, client event id) ever stored.
    f"""CREATE TABLE IF NOT EXISTS event_ids (
        tenant_id {T} NOT NULL, event_id {T} NOT NULL, PRIMARY KEY (tenant_id, event_id))""",
    # Numbers events in the order they are stored (exports replay snapshots in that order).
    "CREATE SEQUENCE IF NOT EXISTS events_n",
    f"""CREATE TABLE IF NOT EXISTS events (
        tenant_id {T} NOT NULL, event_id {T} NOT NULL, influencer_id {T} NOT NULL,
        platform {T} NOT NULL, content_id {T}, campaign_id {T}, metric {T} NOT NULL,
        kind text NOT NULL, value double precision NOT NULL, delta double precision NOT NULL,
        ts_us bigint NOT NULL, user_id {T}, text {T}, tags text[], variant text,
        properties text, ingested_at_us bigint NOT NULL,
        n bigint NOT NULL DEFAULT nextval('events_n')
    ) PARTITION BY RANGE (ts_us)""",
    "CREATE INDEX IF NOT EXISTS events_order ON events (tenant_id, n)",
    "CREATE INDEX IF NOT EXISTS events_tenant_ts ON events (tenant_id, ts_us)",
    "CREATE INDEX IF NOT EXISTS events_influencer ON events (tenant_id, influencer_id, ts_us)",
    "CREATE INDEX IF NOT EXISTS events_content ON events (tenant_id, content_id, ts_us) "
    "WHERE content_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS events_readings ON events "
    "(tenant_id, metric, influencer_id, platform, ts_us) WHERE kind = 'snapshot'",
    # The last reading per snapshot series, which turns a new reading into a delta.
    # A row with last_ts_us NULL is a placeholder that locks a series not seen before.
    f"""CREATE TABLE IF NOT EXISTS snapshot_state (
        tenant_id {T} NOT NULL, influencer_id {T} NOT NULL, platform {T} NOT NULL,
        content_id {T} NOT NULL, metric {T} NOT NULL, last_ts_us bigint,
        last_value double precision,
        PRIMARY KEY (tenant_id, influencer_id, platform, content_id, metric))""",
    *_rollup_ddl(),
    "CREATE INDEX IF NOT EXISTS rollup_minute_time ON rollup_minute (tenant_id, bucket)",
    "CREATE INDEX IF NOT EXISTS rollup_content_hour_time "
    "ON rollup_content_hour (tenant_id, bucket)",
]

ROLLUP_TABLES = tuple(name for name, _, _ in ROLLUPS)


async def migrate(con: asyncpg.Connection, schema: str | None) -> None:
    """Create or complete the schema; safe to run from several processes at once."""
    await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        if schema is not None:
            await con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        async with con.transaction():
            for statement in DDL:
                await con.execute(statement)
            await con.execute(
                "INSERT INTO hm_meta VALUES ('schema_version', $1) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value",
                SCHEMA_VERSION,
            )
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


def month_of(ts_us: int) -> tuple[int, int]:
    moment = datetime.fromtimestamp(ts_us / 1_000_000, tz=UTC)
    return moment.year, moment.month


def _month_start_us(year: int, month: int) -> int:
    if month > 12:
        year, month = year + 1, 1
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1_000_000


def partition_name(year: int, month: int) -> str:
    """The partition of ``events`` holding this month's events."""
    return f"events_{year:04d}{month:02d}"


def partition_ddl(year: int, month: int) -> str:
    low, high = _month_start_us(year, month), _month_start_us(year, month + 1)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(year, month)} PARTITION OF events "
        f"FOR VALUES FROM ({low}) TO ({high})"
    )


async def ensure_partitions(con: asyncpg.Connection, months: set[tuple[int, int]]) -> None:
    """Create the monthly partitions of ``events`` these months need, one process at a time."""
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
        for year, month in sorted(months):
            await con.execute(partition_ddl(year, month))
