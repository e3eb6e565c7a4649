"""Erasing one influencer from the embedded store: raw events, rollups, snapshot state.

Runs on the writer thread (no commit interleaves) while holding the rollup
maintainer's lock (no fold or compaction interleaves), in one transaction.
Rollups keyed by influencer lose the influencer's rows. The others (tenant-wide
hours, engagement per content) lose every row the erased events contributed to
and get those rows folded again from the remaining events the rollups already
cover (seq up to the fold watermark); events above it are folded as usual.
"""

from __future__ import annotations

import duckdb

from hypemeter.backends.embedded.duckdb_store import rollups
from hypemeter.backends.embedded.duckdb_store.transactions import transaction
from hypemeter.metrics.model import HOUR_US

_BY_INFLUENCER = (rollups.MINUTE, rollups.HOUR, rollups.DAY, rollups.CONTENT_HOUR)
_HOUR = f"(epoch_us(ts) // {HOUR_US}) * {HOUR_US}"
_GROUP_MATCH = (
    "g.platform = {t}.platform AND g.campaign_id = {c} AND g.metric = {t}.metric AND g.bucket = {b}"
)


def erase_influencer(con: duckdb.DuckDBPyConnection, tenant_id: str, influencer_id: str) -> int:
    """Delete the influencer's events and everything derived from them; events erased."""
    with transaction(con):
        return _erase(con, tenant_id, influencer_id)


def _erase(con: duckdb.DuckDBPyConnection, tenant_id: str, influencer_id: str) -> int:
    who = [tenant_id, influencer_id]
    high = rollups.watermark(con)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE erased_groups AS
        SELECT DISTINCT platform, coalesce(campaign_id, '') AS campaign_id, metric,
               {_HOUR} AS bucket
        FROM events WHERE tenant_id = ? AND influencer_id = ? AND seq <= {high}""",  # noqa: S608
        who,
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE erased_content AS
        SELECT DISTINCT content_id FROM events
        WHERE tenant_id = ? AND influencer_id = ? AND seq <= {high}
            AND content_id IS NOT NULL""",  # noqa: S608
        who,
    )
    rows = con.execute(
        "DELETE FROM events WHERE tenant_id = ? AND influencer_id = ? RETURNING seq", who
    ).fetchall()
    for table in _BY_INFLUENCER:
        con.execute(
            f"DELETE FROM {table.name} WHERE tenant_id = ? AND influencer_id = ?",  # noqa: S608
            who,
        )
    con.execute("DELETE FROM snapshot_state WHERE tenant_id = ? AND influencer_id = ?", who)
    _refold_tenant_hours(con, tenant_id, high)
    _refold_engagement(con, tenant_id, high)
    con.execute("DROP TABLE erased_groups")
    con.execute("DROP TABLE erased_content")
    return len(rows)


def _refold_tenant_hours(con: duckdb.DuckDBPyConnection, tenant_id: str, high: int) -> None:
    table = rollups.TENANT_HOUR.name
    match = _GROUP_MATCH.format(t="r", c="r.campaign_id", b="r.bucket")
    con.execute(
        f"DELETE FROM {table} r WHERE r.tenant_id = ? "  # noqa: S608
        f"AND EXISTS (SELECT 1 FROM erased_groups g WHERE {match})",
        [tenant_id],
    )
    match = _GROUP_MATCH.format(t="e", c="coalesce(e.campaign_id, '')", b=_HOUR)
    con.execute(
        f"""INSERT INTO {table}
        SELECT tenant_id, platform, coalesce(campaign_id, ''), metric, {_HOUR}, sum(delta),
               count(*)
        FROM events e WHERE e.tenant_id = ? AND e.seq <= {high}
            AND EXISTS (SELECT 1 FROM erased_groups g WHERE {match})
        GROUP BY ALL""",  # noqa: S608
        [tenant_id],
    )


def _refold_engagement(con: duckdb.DuckDBPyConnection, tenant_id: str, high: int) -> None:
    for table in (rollups.ENGAGEMENT_HOUR, rollups.ENGAGEMENT_TAGS_HOUR):
        con.execute(
            f"DELETE FROM {table.name} WHERE tenant_id = ? "  # noqa: S608
            "AND content_id IN (SELECT content_id FROM erased_content)",
            [tenant_id],
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE erased_tenant AS SELECT ?::VARCHAR AS id", [tenant_id]
    )
    rollups.fold_engagement(
        con,
        f"tenant_id = (SELECT id FROM erased_tenant) AND seq <= {int(high)} "  # noqa: S608
        "AND content_id IN (SELECT content_id FROM erased_content)",
    )
    con.execute("DROP TABLE erased_tenant")
