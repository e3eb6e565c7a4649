"""Purging events past the retention from the embedded store, one tenant and UTC day a step.

A step deletes the day's events but the kept readings (``EventStore.expired_days``
says which) and every rollup row of the day's buckets: minute, hour and day buckets
all lie inside one UTC day, so no row mixes purged and remaining events. The kept
readings the rollups already covered (seq up to the fold watermark) are then folded
back in; those above it are folded as usual. Like an erasure, a step runs on the
writer thread (no commit interleaves) holding the rollup maintainer's lock (no fold or
compaction interleaves), in one transaction.
"""

from __future__ import annotations

import duckdb

from hypemeter.backends.embedded.duckdb_store import rollups
from hypemeter.backends.embedded.duckdb_store.transactions import transaction
from hypemeter.metrics.model import DAY_US


def _kept(scope: str) -> str:
    """The rowids of the newest reading before the cutoff of each snapshot series (the
    greatest value first among readings of one instant, as gauges order them)."""
    return f"""SELECT rowid AS id FROM events
        WHERE kind = 'snapshot' AND ts < make_timestamptz($cutoff::BIGINT) {scope}
        QUALIFY row_number() OVER (
            PARTITION BY tenant_id, influencer_id, platform, metric
            ORDER BY ts DESC, value DESC) = 1"""  # noqa: S608


def expired_days(con: duckdb.DuckDBPyConnection, cutoff_us: int) -> list[tuple[str, int, int]]:
    """(tenant, day start, events to delete) of every day before the cutoff, oldest first."""
    rows = con.execute(
        f"""SELECT tenant_id, (epoch_us(ts) // {DAY_US}) * {DAY_US} AS day, count(*)
        FROM events
        WHERE ts < make_timestamptz($cutoff::BIGINT) AND rowid NOT IN ({_kept("")})
        GROUP BY ALL ORDER BY day, tenant_id""",  # noqa: S608
        {"cutoff": cutoff_us},
    ).fetchall()
    return [(str(t), int(d), int(n)) for t, d, n in rows]


def purge_day(con: duckdb.DuckDBPyConnection, tenant_id: str, day_us: int, cutoff_us: int) -> int:
    """Delete one tenant's events of one day before the cutoff but the kept readings, and
    make the day's rollup rows those of what is left; events deleted."""
    with transaction(con):
        return _purge(con, tenant_id, day_us, min(day_us + DAY_US, cutoff_us), cutoff_us)


def _purge(
    con: duckdb.DuckDBPyConnection, tenant_id: str, lo_us: int, hi_us: int, cutoff_us: int
) -> int:
    high = rollups.watermark(con)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE purge_kept AS {_kept('AND tenant_id = $tenant')}",
        {"cutoff": cutoff_us, "tenant": tenant_id},
    )
    span = {"tenant": tenant_id, "lo": lo_us, "hi": hi_us}
    deleted = con.execute(
        """DELETE FROM events WHERE tenant_id = $tenant
            AND ts >= make_timestamptz($lo::BIGINT) AND ts < make_timestamptz($hi::BIGINT)
            AND rowid NOT IN (SELECT id FROM purge_kept)""",
        span,
    ).fetchall()
    for table in rollups.TABLES:
        con.execute(
            f"DELETE FROM {table.name} WHERE tenant_id = $tenant "  # noqa: S608
            "AND bucket >= $lo AND bucket < $hi",
            span,
        )
    left = con.execute(
        """SELECT count(*) FROM events WHERE tenant_id = $tenant AND seq <= $high
            AND ts >= make_timestamptz($lo::BIGINT) AND ts < make_timestamptz($hi::BIGINT)""",
        {**span, "high": high},
    ).fetchall()
    if left[0][0]:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE purge_tenant AS SELECT $tenant AS id",
            {"tenant": tenant_id},
        )
        rollups.fold_where(
            con,
            "tenant_id = (SELECT id FROM purge_tenant) "  # noqa: S608
            f"AND ts >= make_timestamptz({int(lo_us)}::BIGINT) "
            f"AND ts < make_timestamptz({int(hi_us)}::BIGINT) AND seq <= {int(high)}",
        )
        con.execute("DROP TABLE purge_tenant")
    con.execute("DROP TABLE purge_kept")
    return int(deleted[0][0]) if deleted else 0
