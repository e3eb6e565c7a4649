"""The tables of the embedded store, created (or kept) at every start."""

from __future__ import annotations

import duckdb

from hypemeter.backends.embedded.duckdb_store import rollups

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS tenants (tenant_id VARCHAR PRIMARY KEY, created_at_us BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id VARCHAR PRIMARY KEY, tenant_id VARCHAR NOT NULL, key_hash VARCHAR NOT NULL UNIQUE,
    scopes VARCHAR[] NOT NULL, name VARCHAR NOT NULL, created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT);
-- Added later: keys of files made before it have no limits (NULL).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS limits VARCHAR;
CREATE TABLE IF NOT EXISTS value_limits (
    tenant_id VARCHAR NOT NULL, metric VARCHAR NOT NULL, max_delta DOUBLE NOT NULL,
    max_snapshot DOUBLE NOT NULL, PRIMARY KEY (tenant_id, metric));
CREATE TABLE IF NOT EXISTS stream_tokens (
    subscription_id VARCHAR PRIMARY KEY, tenant_id VARCHAR NOT NULL, key_id VARCHAR NOT NULL,
    token_hash VARCHAR NOT NULL UNIQUE, filter VARCHAR NOT NULL, metrics VARCHAR[] NOT NULL,
    expires_us BIGINT NOT NULL);
-- Added later: files made before it gain the column, their tokens without the right.
ALTER TABLE stream_tokens ADD COLUMN IF NOT EXISTS tail BOOLEAN DEFAULT false;
CREATE TABLE IF NOT EXISTS custom_metrics (
    tenant_id VARCHAR NOT NULL, name VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    PRIMARY KEY (tenant_id, name));
CREATE TABLE IF NOT EXISTS registry (
    tenant_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, entity_id VARCHAR NOT NULL,
    doc VARCHAR NOT NULL, keys VARCHAR NOT NULL, search VARCHAR NOT NULL,
    updated_us BIGINT NOT NULL, PRIMARY KEY (tenant_id, kind, entity_id));
CREATE TABLE IF NOT EXISTS events (
    tenant_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL, fp_hi UBIGINT, fp_lo UBIGINT,
    influencer_id VARCHAR NOT NULL, platform VARCHAR NOT NULL, content_id VARCHAR,
    campaign_id VARCHAR, metric VARCHAR NOT NULL, kind VARCHAR NOT NULL, value DOUBLE NOT NULL,
    delta DOUBLE NOT NULL, ts TIMESTAMPTZ NOT NULL, user_id VARCHAR, text VARCHAR,
    tags VARCHAR[], variant VARCHAR, properties VARCHAR, seq BIGINT NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot_state (
    tenant_id VARCHAR, influencer_id VARCHAR, platform VARCHAR, content_id VARCHAR,
    metric VARCHAR, last_ts_us BIGINT NOT NULL, last_value DOUBLE NOT NULL,
    PRIMARY KEY (tenant_id, influencer_id, platform, content_id, metric));
"""

# The columns an ingest batch carries, in table order (seq and ingested_at are added on insert).
EVENT_COLUMNS = (
    "tenant_id, event_id, fp_hi, fp_lo, influencer_id, platform, content_id, campaign_id, "
    "metric, kind, value, delta, ts, user_id, text, tags, variant, properties"
)
SNAPSHOT_COLUMNS = "tenant_id, influencer_id, platform, content_id, metric, last_ts_us, last_value"


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)
    rollups.prepare(con)
    con.execute(
        "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT DO NOTHING", [SCHEMA_VERSION]
    )
