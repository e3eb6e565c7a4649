"""Erasing one influencer from the PostgreSQL store: raw events, ids, rollups, readings.

One transaction that first locks the events, the id index, the readings and every
rollup against writers (commits of any process wait; queries go on and see the
old state until it commits). Rollups keyed by influencer lose the influencer's
rows; the tenant-wide hours and the per-content engagement rows the erased events
contributed to are deleted and folded again from the remaining events, with the
statements commits use.
"""

from __future__ import annotations

import asyncpg

from hypemeter.backends.cluster.postgres_schema import ROLLUP_TABLES
from hypemeter.backends.cluster.rollup_sql import rollup_statements
from hypemeter.metrics.model import HOUR_US

_BY_INFLUENCER = ("rollup_minute", "rollup_hour", "rollup_day", "rollup_content_hour")
_HOUR = f"(ts_us / {HOUR_US}) * {HOUR_US}"
_GROUP_MATCH = (
    "g.metric = {t}.metric AND g.bucket = {b} AND g.platform = {t}.platform AND g.campaign_id = {c}"
)


async def erase_influencer(con: asyncpg.Connection, tenant_id: str, influencer_id: str) -> int:
    """Delete the influencer's events and everything derived from them; events erased."""
    async with con.transaction():
        locked = ", ".join(("events", "event_ids", "snapshot_state", *ROLLUP_TABLES))
        await con.execute(f"LOCK TABLE {locked} IN EXCLUSIVE MODE")
        await con.execute(
            f"""CREATE TEMP TABLE hm_erased_groups ON COMMIT DROP AS
            SELECT DISTINCT metric, {_HOUR} AS bucket, platform,
                   coalesce(campaign_id, '') AS campaign_id
            FROM events WHERE tenant_id = $1 AND influencer_id = $2""",  # noqa: S608
            tenant_id,
            influencer_id,
        )
        await con.execute(
            """CREATE TEMP TABLE hm_erased_content ON COMMIT DROP AS
            SELECT DISTINCT content_id FROM events
            WHERE tenant_id = $1 AND influencer_id = $2 AND content_id IS NOT NULL""",
            tenant_id,
            influencer_id,
        )
        await con.execute(
            "DELETE FROM event_ids i USING events e WHERE i.tenant_id = $1 "
            "AND e.tenant_id = $1 AND e.influencer_id = $2 AND i.event_id = e.event_id",
            tenant_id,
            influencer_id,
        )
        status = await con.execute(
            "DELETE FROM events WHERE tenant_id = $1 AND influencer_id = $2",
            tenant_id,
            influencer_id,
        )
        for table in (*_BY_INFLUENCER, "snapshot_state"):
            await con.execute(
                f"DELETE FROM {table} WHERE tenant_id = $1 AND influencer_id = $2",  # noqa: S608
                tenant_id,
                influencer_id,
            )
        await _refold(con, tenant_id)
    return int(status.split()[-1])


async def _refold(con: asyncpg.Connection, tenant_id: str) -> None:
    match = _GROUP_MATCH.format(t="r", b="r.bucket", c="r.campaign_id")
    await con.execute(
        f"DELETE FROM rollup_tenant_hour r USING hm_erased_groups g "  # noqa: S608
        f"WHERE r.tenant_id = $1 AND {match}",
        tenant_id,
    )
    for table in ("rollup_engagement_hour", "rollup_engagement_tags_hour"):
        await con.execute(
            f"DELETE FROM {table} WHERE tenant_id = $1 "  # noqa: S608
            "AND content_id IN (SELECT content_id FROM hm_erased_content)",
            tenant_id,
        )
    match = _GROUP_MATCH.format(
        t="e", b=f"(e.ts_us / {HOUR_US}) * {HOUR_US}", c="coalesce(e.campaign_id, '')"
    )
    await con.execute(
        f"""CREATE TEMP TABLE hm_refold_groups ON COMMIT DROP AS
        SELECT e.* FROM events e WHERE e.tenant_id = $1
            AND EXISTS (SELECT 1 FROM hm_erased_groups g WHERE {match})""",  # noqa: S608
        tenant_id,
    )
    await con.execute(
        """CREATE TEMP TABLE hm_refold_content ON COMMIT DROP AS
        SELECT * FROM events WHERE tenant_id = $1
            AND content_id IN (SELECT content_id FROM hm_erased_content)""",
        tenant_id,
    )
    for sql in rollup_statements("hm_refold_groups", only=frozenset({"rollup_tenant_hour"})):
        await con.execute(sql)
    engagement = frozenset({"rollup_engagement_hour", "rollup_engagement_tags_hour"})
    for sql in rollup_statements("hm_refold_content", only=engagement):
        await con.execute(sql)
