"""Purging events past the retention from the PostgreSQL store, one tenant and UTC day a step.

A step deletes the day's events but the kept readings (``EventStore.expired_days``
says which), their ids, and every rollup row of the day's buckets: minute, hour and
day buckets all lie inside one UTC day, so no row mixes purged and remaining events.
What the day keeps is then folded back in with the statements commits use. Like an
erasure, a step locks the events, the ids and the rollups against writers first (a
worker may still commit an event of the day, validated before it left the retention);
queries go on and see the day as it was until the step commits.
"""

from __future__ import annotations

import asyncpg

from hypemeter.backends.cluster.postgres_schema import ROLLUP_TABLES
from hypemeter.backends.cluster.rollup_sql import rollup_statements
from hypemeter.metrics.model import DAY_US


def _kept(scope: str) -> str:
    """The row numbers of the newest reading before the cutoff ($1) of each snapshot
    series (the greatest value first among readings of one instant, as gauges order them)."""
    return f"""SELECT DISTINCT ON (tenant_id, influencer_id, platform, metric) n FROM events
        WHERE kind = 'snapshot' AND ts_us < $1 {scope}
        ORDER BY tenant_id, influencer_id, platform, metric, ts_us DESC, value DESC"""  # noqa: S608


async def expired_days(con: asyncpg.Connection, cutoff_us: int) -> list[tuple[str, int, int]]:
    """(tenant, day start, events to delete) of every day before the cutoff, oldest first."""
    rows = await con.fetch(
        f"""SELECT tenant_id, (ts_us / {DAY_US}) * {DAY_US} AS day, count(*) FROM events
        WHERE ts_us < $1 AND n NOT IN ({_kept("")})
        GROUP BY 1, 2 ORDER BY 2, 1""",  # noqa: S608
        cutoff_us,
    )
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]


async def purge_day(con: asyncpg.Connection, tenant_id: str, day_us: int, cutoff_us: int) -> int:
    """Delete one tenant's events of one day before the cutoff but the kept readings, and
    make the day's rollup rows those of what is left; events deleted."""
    hi_us = min(day_us + DAY_US, cutoff_us)
    async with con.transaction():
        locked = ", ".join(("events", "event_ids", *ROLLUP_TABLES))
        await con.execute(f"LOCK TABLE {locked} IN EXCLUSIVE MODE")
        await con.execute(
            "CREATE TEMP TABLE hm_purge_kept ON COMMIT DROP AS " + _kept("AND tenant_id = $2"),
            cutoff_us,
            tenant_id,
        )
        day = "tenant_id = $1 AND ts_us >= $2 AND ts_us < $3"
        gone = day + " AND n NOT IN (SELECT n FROM hm_purge_kept)"  # noqa: S608
        await con.execute(
            "DELETE FROM event_ids i WHERE i.tenant_id = $1 AND i.event_id IN "  # noqa: S608
            f"(SELECT event_id FROM events WHERE {gone})",
            tenant_id,
            day_us,
            hi_us,
        )
        status = await con.execute(
            f"DELETE FROM events WHERE {gone}",  # noqa: S608
            tenant_id,
            day_us,
            hi_us,
        )
        for table in ROLLUP_TABLES:
            await con.execute(
                f"DELETE FROM {table} WHERE tenant_id = $1 AND bucket >= $2 AND bucket < $3",  # noqa: S608
                tenant_id,
                day_us,
                hi_us,
            )
        await con.execute(
            f"CREATE TEMP TABLE hm_purge_left ON COMMIT DROP AS SELECT * FROM events WHERE {day}",  # noqa: S608
            tenant_id,
            day_us,
            hi_us,
        )
        for sql in rollup_statements("hm_purge_left"):
            await con.execute(sql)
    return int(status.split()[-1])
