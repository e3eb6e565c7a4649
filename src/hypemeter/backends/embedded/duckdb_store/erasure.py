"""Erasing one influencer from the embedded store: raw events, rollups, snapshot state.

Runs on the writer thread (no commit interleaves) while holding the rollup
maintainer's lock (no fold or compaction interleaves), in one transaction.
Rollups keyed by influencer lose the influencer's rows. The others (tenant-wide
hours, engagement per content) lose every row the erased events contributed to
and get those rows folded again from the remaining events the rollups already
cover (seq up to the fold watermark); events above it are folded as usual.

Deleted rows can outlive an erasure in the file: a checkpoint writes a row group
whole, deleted rows included (marked deleted), as long as some of its rows live on,
and DuckDB does not clear the blocks it frees. So the erased rows are blanked (ids,
text, user ids, properties) in the transaction that deletes them: rows that
reach the file after the erasure reach it empty. Rows already in the file stay in its
blocks; for those an erasure marks the file for a rewrite, which the next start does
before anything else: a copy of the live rows only takes the file's place. (Sealing
connector documents stored in plain text marks it too: ``registry.reclaim``.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import duckdb

from hypemeter.backends.embedded.duckdb_store import rollups
from hypemeter.backends.embedded.duckdb_store.transactions import transaction
from hypemeter.metrics.model import HOUR_US

_BY_INFLUENCER = (rollups.MINUTE, rollups.HOUR, rollups.DAY, rollups.CONTENT_HOUR)
_HOUR = f"(epoch_us(ts) // {HOUR_US}) * {HOUR_US}"
_GROUP_MATCH = (
    "g.platform = {t}.platform AND g.campaign_id = {c} AND g.metric = {t}.metric AND g.bucket = {b}"
)
log = logging.getLogger("hypemeter.store")
# What an erased event keeps until it is deleted in the same transaction: no id, no text.
# (Not its tags: DuckDB updates a list as a deletion and an insertion, which would leave
# the whole row behind as it was.)
_BLANK_EVENT = (
    "event_id = '', influencer_id = '', content_id = NULL, campaign_id = NULL, "
    "user_id = NULL, text = NULL, variant = NULL, properties = NULL"
)
SQL_STRING, SQL_NAME = "'", '"'


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
    erased = _delete_events(con, who)
    for table in _BY_INFLUENCER:
        con.execute(
            f"UPDATE {table.name} SET influencer_id = '' "  # noqa: S608
            "WHERE tenant_id = ? AND influencer_id = ?",
            who,
        )
        con.execute(
            f"DELETE FROM {table.name} WHERE tenant_id = ? AND influencer_id = ''",  # noqa: S608
            [tenant_id],
        )
    con.execute("DELETE FROM snapshot_state WHERE tenant_id = ? AND influencer_id = ?", who)
    mark_rewrite(con)
    _refold_tenant_hours(con, tenant_id, high)
    _refold_engagement(con, tenant_id, high)
    con.execute("DROP TABLE erased_groups")
    con.execute("DROP TABLE erased_content")
    return erased


def _delete_events(con: duckdb.DuckDBPyConnection, who: list[str]) -> int:
    """Blank, then delete, the events of (tenant, influencer) ``who``: a checkpoint writes
    a row group's deleted rows too (marked deleted) whenever some of its rows live on,
    so they go out empty."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE erased_rows AS "
        "SELECT rowid AS id FROM events WHERE tenant_id = ? AND influencer_id = ?",
        who,
    )
    con.execute(
        f"UPDATE events SET {_BLANK_EVENT} "  # noqa: S608
        "WHERE rowid IN (SELECT id FROM erased_rows)"
    )
    rows = con.execute(
        "DELETE FROM events WHERE rowid IN (SELECT id FROM erased_rows) RETURNING seq"
    ).fetchall()
    con.execute("DROP TABLE erased_rows")
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
    for table, blank in (
        (rollups.ENGAGEMENT_HOUR, "sample = NULL"),
        (rollups.ENGAGEMENT_TAGS_HOUR, "tag = ''"),
    ):
        con.execute(
            f"UPDATE {table.name} SET {blank} WHERE tenant_id = ? "  # noqa: S608
            "AND content_id IN (SELECT content_id FROM erased_content)",
            [tenant_id],
        )
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


def mark_rewrite(con: duckdb.DuckDBPyConnection) -> None:
    """Have the next start rewrite the file: rows it no longer holds (erased, or documents
    written again sealed) may still be in its freed blocks."""
    con.execute("INSERT OR REPLACE INTO meta VALUES ('rewrite_due', '1')")


def rewrite_due(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether an erasure or a reseal happened since the file was last rewritten."""
    return bool(con.execute("SELECT 1 FROM meta WHERE key = 'rewrite_due'").fetchall())


def rewrite(path: Path) -> None:
    """Put a copy of the store's live rows in place of the file at ``path`` (closed).

    A crash before the copy takes the file's place leaves the old file, still marked:
    the next start rewrites it again.
    """
    fresh = path.with_name(f"{path.stem}.rewrite{path.suffix}")
    for leftover in (fresh, _wal(fresh)):
        leftover.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        name = con.execute("SELECT current_database()").fetchall()[0][0]
        con.execute(f"ATTACH {_quoted(str(fresh), SQL_STRING)} AS hm_rewrite")
        con.execute(f"COPY FROM DATABASE {_quoted(name, SQL_NAME)} TO hm_rewrite")
        con.execute("DELETE FROM hm_rewrite.main.meta WHERE key = 'rewrite_due'")
        con.execute("DETACH hm_rewrite")
    finally:
        con.close()
    if _wal(path).exists() or _wal(fresh).exists():
        # Not closed cleanly: a WAL left beside the new file would be replayed into it.
        log.warning("store file not rewritten: a WAL remains")
        fresh.unlink(missing_ok=True)
        return
    _sync(fresh)
    os.replace(fresh, path)
    _sync(path.parent)
    log.info("store file rewritten", extra={"bytes": path.stat().st_size})


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _quoted(text: str, quote: str) -> str:
    return quote + text.replace(quote, quote * 2) + quote


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
