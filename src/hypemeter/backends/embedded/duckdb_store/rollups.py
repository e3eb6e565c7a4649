"""Rollups of the embedded store: minute, hour and day buckets folded from the raw events.

The raw events are the first level of an LSM-like structure. A maintainer
thread folds every newly committed group of events into partial rollup rows
(one transaction, which also advances the ``rollup_seq`` watermark), at most
``fold_interval`` after the commit. Queries read the rollups for events up to
the watermark and the raw events above it, in one snapshot, so an answer
includes every acknowledged event whether or not it has been folded yet.

Partial rows pile up at the end of each table; once they are a fair share of
it the table is compacted: partials with equal keys merged, and the rows
rewritten in the order queries filter by, so DuckDB's zone maps skip most of
the table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from hypemeter.backends.embedded.duckdb_store.transactions import transaction
from hypemeter.metrics.model import DAY_US, ENGAGEMENT, HOUR_US, MINUTE_US

log = logging.getLogger("hypemeter.rollups")

_READING = "STRUCT(t BIGINT, v DOUBLE)"
# Seconds without new events after which leftover partial rows are compacted.
IDLE_COMPACT_SECONDS = 5.0
FOLD_NICENESS = 10
FOLD_MAX_EVENTS = 2_000_000


@dataclass(frozen=True, slots=True)
class RollupTable:
    """A rollup: its key, how partial rows merge, and the order compaction writes.

    ``compact_share``: compact once partial rows reach this share of the
    compacted rows. Tables ordered by time take new partials in about that
    order anyway, so they are compacted rarely (and whenever ingest pauses).
    """

    name: str
    keys: tuple[str, ...]
    aggregates: tuple[tuple[str, str, str], ...]  # (column, type, how partials merge)
    order: tuple[str, ...]
    compact_share: float = 2.0


_COUNTED = (("total", "DOUBLE", "sum"), ("events", "BIGINT", "sum"))
_READINGS = (("first", _READING, "min"), ("last", _READING, "max"))
_ACCOUNT_KEYS = ("tenant_id", "influencer_id", "platform", "campaign_id", "metric", "bucket")

MINUTE = RollupTable(
    "rollup_minute",
    _ACCOUNT_KEYS,
    (*_COUNTED, *_READINGS),
    # Minute buckets are asked for over short spans: cluster by time.
    ("tenant_id", "bucket", "influencer_id", "metric"),
)
HOUR = RollupTable(
    "rollup_hour",
    _ACCOUNT_KEYS,
    (*_COUNTED, *_READINGS),
    ("tenant_id", "influencer_id", "metric", "bucket"),
    compact_share=0.25,
)
DAY = RollupTable(
    "rollup_day",
    _ACCOUNT_KEYS,
    (*_COUNTED, *_READINGS),
    ("tenant_id", "influencer_id", "metric", "bucket"),
    compact_share=0.25,
)
TENANT_HOUR = RollupTable(
    # Without the influencer: what tenant-wide groupings (platform, campaign, day) read.
    "rollup_tenant_hour",
    ("tenant_id", "platform", "campaign_id", "metric", "bucket"),
    _COUNTED,
    ("tenant_id", "bucket", "metric"),
)
CONTENT_HOUR = RollupTable(
    "rollup_content_hour",
    ("tenant_id", "content_id", "influencer_id", "platform", "campaign_id", "metric", "bucket"),
    _COUNTED,
    ("tenant_id", "bucket", "content_id"),
)
ENGAGEMENT_HOUR = RollupTable(
    # Engagement events per content item: what trending reads.
    "rollup_engagement_hour",
    ("tenant_id", "content_id", "platform", "bucket"),
    (
        *_COUNTED,
        ("latest", "BIGINT", "max"),
        ("sample", "STRUCT(t BIGINT, text VARCHAR)", "max"),
    ),
    ("tenant_id", "bucket", "content_id"),
)
ENGAGEMENT_TAGS_HOUR = RollupTable(
    "rollup_engagement_tags_hour",
    ("tenant_id", "content_id", "platform", "bucket", "tag"),
    (("n", "BIGINT", "sum"),),
    ("tenant_id", "bucket", "content_id"),
)
TABLES = (MINUTE, HOUR, DAY, TENANT_HOUR, CONTENT_HOUR, ENGAGEMENT_HOUR, ENGAGEMENT_TAGS_HOUR)
GRAIN_TABLES = {"minute": MINUTE, "hour": HOUR, "day": DAY}


# Bumped whenever a rollup table changes shape; a store with another version drops
# its rollups at start-up and folds them again from the raw events.
ROLLUP_SCHEMA_VERSION = "3"
_RETIRED = ("rollup_content_tags_hour",)


def prepare(con: duckdb.DuckDBPyConnection) -> None:
    """Create the rollup tables, or recreate them empty when their layout changed."""
    rows = con.execute("SELECT value FROM meta WHERE key = 'rollup_schema'").fetchall()
    if rows and rows[0][0] == ROLLUP_SCHEMA_VERSION:
        con.execute(schema())
        return
    con.execute("BEGIN TRANSACTION")
    for name in (*(t.name for t in TABLES), *_RETIRED):
        con.execute(f"DROP TABLE IF EXISTS {name}")
    con.execute(schema())
    con.execute("INSERT OR REPLACE INTO meta VALUES ('rollup_seq', '0')")
    con.execute("INSERT OR REPLACE INTO meta VALUES ('rollup_schema', ?)", [ROLLUP_SCHEMA_VERSION])
    con.execute("COMMIT")
    log.info("rollup tables (re)created; they are folded again from the raw events")


def schema() -> str:
    statements = []
    for table in TABLES:
        columns = [f"{k} {'BIGINT' if k == 'bucket' else 'VARCHAR'} NOT NULL" for k in table.keys]
        columns += [f"{name} {kind}" for name, kind, _ in table.aggregates]
        statements.append(f"CREATE TABLE IF NOT EXISTS {table.name} ({', '.join(columns)});")
    statements.append(
        "CREATE TABLE IF NOT EXISTS emv_rates (tenant_id VARCHAR, platform VARCHAR, "
        "metric VARCHAR, value DOUBLE NOT NULL, PRIMARY KEY (tenant_id, platform, metric));"
    )
    return "\n".join(statements)


def watermark(con: duckdb.DuckDBPyConnection) -> int:
    """The seq up to which events are folded into the rollups (in this transaction's view)."""
    rows = con.execute("SELECT value FROM meta WHERE key = 'rollup_seq'").fetchall()
    return int(rows[0][0]) if rows else 0


def _bucket(width_us: int, column: str = "epoch_us(ts)") -> str:
    return f"({column} // {width_us}) * {width_us}"


def fold(
    con: duckdb.DuckDBPyConnection, upto: int | None = None
) -> tuple[int, int, int, set[tuple[str, str]]]:
    """Fold events above the watermark (up to seq ``upto``) into partial rows, atomically.

    Returns (events folded, partial rows written, the new watermark, the
    (tenant, influencer) pairs whose hourly rollups changed).
    """
    with transaction(con):
        low = watermark(con)
        high_rows = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchall()
        high = int(high_rows[0][0]) if upto is None else min(upto, int(high_rows[0][0]))
        if high <= low:
            return 0, 0, low, set()
        counted, written, touched = _fold_range(con, low, high)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('rollup_seq', ?)", [str(high)])
    return counted, written, high, touched


def _fold_range(
    con: duckdb.DuckDBPyConnection, low: int, high: int, *, derived: bool = True
) -> tuple[int, int, set[tuple[str, str]]]:
    """(events folded, partial rows written, (tenant, influencer) pairs touched).

    Without ``derived``, the rollups that are sums of minute rows (hour, day, tenant
    hour) are left out: a rebuild makes them once from the whole minute table.
    """
    return fold_where(con, f"seq > {int(low)} AND seq <= {int(high)}", derived=derived)


def fold_where(
    con: duckdb.DuckDBPyConnection, where: str, *, derived: bool = True
) -> tuple[int, int, set[tuple[str, str]]]:
    """Fold the events ``where`` selects into partial rows; as ``_fold_range``."""
    reading = "{'t': epoch_us(ts), 'v': value}"
    # Counted values by minute, and separately the (few) snapshot readings.
    minutes = f"""
        SELECT tenant_id, influencer_id, platform, coalesce(campaign_id, '') AS campaign_id,
               metric, {_bucket(MINUTE_US)} AS bucket, sum(delta) AS total,
               count(*) AS events, NULL::{_READING} AS first, NULL::{_READING} AS last
        FROM events WHERE {where} GROUP BY ALL
        UNION ALL
        SELECT tenant_id, influencer_id, platform, coalesce(campaign_id, ''), metric,
               {_bucket(MINUTE_US)}, 0.0, 0, min({reading}), max({reading})
        FROM events WHERE {where} AND kind = 'snapshot' GROUP BY ALL"""
    # Counter rows and reading rows stay apart (a reading row has events = 0): merging
    # them costs more than the queries that sum over both.
    if derived:
        con.execute(f"CREATE OR REPLACE TEMP TABLE fold_minute AS {minutes}")
        written = _insert(con, MINUTE, "SELECT * FROM fold_minute")
        # Counter rows count every event once (reading rows carry events = 0).
        counted = con.execute("SELECT coalesce(sum(events), 0) FROM fold_minute").fetchall()
    else:
        written = _insert(con, MINUTE, minutes)
        counted = con.execute(f"SELECT count(*) FROM events WHERE {where}").fetchall()
    written += _insert(
        con,
        CONTENT_HOUR,
        f"""SELECT tenant_id, content_id, influencer_id, platform,
               coalesce(campaign_id, '') AS campaign_id, metric, {_bucket(HOUR_US)} AS bucket,
               sum(delta), count(*)
        FROM events WHERE {where} AND content_id IS NOT NULL GROUP BY ALL""",
    )
    written += fold_engagement(con, where)
    if not derived:
        return int(counted[0][0]), written, set()
    keys = ", ".join(k for k in _ACCOUNT_KEYS if k != "bucket")
    for source, target, width in (
        ("fold_minute", "fold_hour", HOUR_US),
        ("fold_hour", "fold_day", DAY_US),
    ):
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {target} AS
            SELECT {keys}, {_bucket(width, "bucket")} AS bucket, sum(total) AS total,
                   sum(events) AS events, NULL::{_READING} AS first, NULL::{_READING} AS last
            FROM {source} WHERE first IS NULL GROUP BY ALL
            UNION ALL
            SELECT {keys}, {_bucket(width, "bucket")}, 0.0, 0, min(first), max(last)
            FROM {source} WHERE first IS NOT NULL GROUP BY ALL"""
        )
    written += _insert(con, HOUR, "SELECT * FROM fold_hour")
    written += _insert(con, DAY, "SELECT * FROM fold_day")
    written += _insert(
        con,
        TENANT_HOUR,
        "SELECT tenant_id, platform, campaign_id, metric, bucket, sum(total), sum(events) "
        "FROM fold_hour WHERE first IS NULL GROUP BY ALL",
    )
    pairs = con.execute("SELECT DISTINCT tenant_id, influencer_id FROM fold_hour").fetchall()
    for temp in ("fold_minute", "fold_hour", "fold_day"):
        con.execute(f"DROP TABLE {temp}")
    return int(counted[0][0]), written, {(str(t), str(i)) for t, i in pairs}


def fold_engagement(con: duckdb.DuckDBPyConnection, where: str) -> int:
    """Fold the events ``where`` selects into the two engagement rollups; rows written."""
    engagement = f"metric IN ({', '.join(repr(m) for m in ENGAGEMENT)})"
    written = _insert(
        con,
        ENGAGEMENT_HOUR,
        f"""SELECT tenant_id, content_id, platform, {_bucket(HOUR_US)} AS bucket,
               sum(delta), count(*), max(epoch_us(ts)),
               max({{'t': epoch_us(ts), 'text': text}}) FILTER (WHERE text IS NOT NULL)
        FROM events WHERE {where} AND content_id IS NOT NULL AND {engagement} GROUP BY ALL""",
    )
    return written + _insert(
        con,
        ENGAGEMENT_TAGS_HOUR,
        f"""SELECT tenant_id, content_id, platform, bucket, tag, count(*)
        FROM (SELECT tenant_id, content_id, platform, {_bucket(HOUR_US)} AS bucket,
                     unnest(tags) AS tag
              FROM events WHERE {where} AND content_id IS NOT NULL AND {engagement}
                    AND len(tags) > 0)
        GROUP BY ALL""",
    )


def fold_bound(
    con: duckdb.DuckDBPyConnection, low: int, max_events: int = FOLD_MAX_EVENTS
) -> tuple[int, bool]:
    """The highest seq above ``low`` such that a fold takes about ``max_events`` at most,
    and whether committed events lie beyond it."""
    groups = con.execute(
        "SELECT seq, count(*) FROM events WHERE seq > ? GROUP BY seq ORDER BY seq", [low]
    ).fetchall()
    total, bound = 0, low
    for seq, count in groups:
        if total and total + int(count) > max_events:
            return bound, True
        total += int(count)
        bound = int(seq)
    return bound, False


def _insert(con: duckdb.DuckDBPyConnection, table: RollupTable, select: str) -> int:
    rows = con.execute(f"INSERT INTO {table.name} {select}").fetchall()
    return int(rows[0][0]) if rows else 0


def compact(con: duckdb.DuckDBPyConnection, table: RollupTable) -> int:
    """Merge partial rows with equal keys and rewrite the table in query order; rows after."""
    keys = ", ".join(table.keys)
    merged = _merged(table, named=True)
    with transaction(con):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE compacted AS SELECT {keys}, {merged} "
            f"FROM {table.name} GROUP BY ALL"
        )
        con.execute(f"DELETE FROM {table.name}")
        rows = con.execute(
            f"INSERT INTO {table.name} SELECT * FROM compacted ORDER BY {', '.join(table.order)}"
        ).fetchall()
        con.execute("DROP TABLE compacted")
    return int(rows[0][0]) if rows else 0


def rebuild(
    con: duckdb.DuckDBPyConnection, progress: Callable[[int, int], None], chunk_events: int
) -> int:
    """Rebuild every rollup from the raw events; ``progress(done, total)``; events folded.

    One transaction: a rebuild that stops half way leaves the rollups as they were.
    The raw events fold into the minute, content and engagement rollups in chunks of
    about ``chunk_events``; the hour, day and tenant-hour rollups are then summed once
    from the whole minute table, merged and in query order (no compaction after).
    """
    with transaction(con):
        for table in TABLES:
            con.execute(f"DELETE FROM {table.name}")
        groups = con.execute(
            "SELECT seq, count(*) FROM events GROUP BY seq ORDER BY seq"
        ).fetchall()
        total = sum(int(n) for _, n in groups)
        progress(0, total)
        done = pending = 0
        low = 0
        for seq, count in groups:
            pending += int(count)
            if pending >= chunk_events or seq == groups[-1][0]:
                folded, _, _ = _fold_range(con, low, int(seq), derived=False)
                done += folded
                low, pending = int(seq), 0
                progress(done, total)
        _derive(con)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('rollup_seq', ?)", [str(low)])
    return done


def _merged(table: RollupTable, *, named: bool = False) -> str:
    """The aggregates that merge rows of ``table``'s shape (partial rows, or finer buckets)."""
    return ", ".join(
        (
            f"{how}({name}) FILTER (WHERE {name} IS NOT NULL)"
            if how in {"min", "max"}
            else f"{how}({name})"
        )
        + (f" AS {name}" if named else "")
        for name, _, how in table.aggregates
    )


def _derive(con: duckdb.DuckDBPyConnection) -> None:
    """The hour, day and tenant-hour rollups from the (whole) minute and hour tables."""
    keys = ", ".join(k for k in _ACCOUNT_KEYS if k != "bucket")
    for source, target, width in ((MINUTE, HOUR, HOUR_US), (HOUR, DAY, DAY_US)):
        con.execute(
            f"INSERT INTO {target.name} "
            f"SELECT {keys}, {_bucket(width, 'bucket')} AS bucket, {_merged(source)} "
            f"FROM {source.name} GROUP BY ALL ORDER BY {', '.join(target.order)}"
        )
    # Counter rows only (events > 0), as a fold takes them.
    con.execute(
        f"INSERT INTO {TENANT_HOUR.name} "
        "SELECT tenant_id, platform, campaign_id, metric, bucket, sum(total), sum(events) "
        f"FROM {HOUR.name} WHERE events > 0 GROUP BY ALL ORDER BY {', '.join(TENANT_HOUR.order)}"
    )


class RollupMaintainer:
    """A thread that folds new events into the rollups and compacts them when due."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        fold_interval: float,
        compact_min_rows: int,
    ) -> None:
        self._con = con
        self._interval = fold_interval
        self._min_rows = compact_min_rows
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stopping = False
        self._idle = threading.Condition()
        self._busy = False
        self._sizes: dict[str, int] = {}
        self._partials: dict[str, int] = {}
        self.folded_seq = 0
        # Held by every fold and compaction; whoever rewrites rollups elsewhere (an
        # erasure, on the writer thread) holds it too.
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="hypemeter-rollups", daemon=True)

    def start(self) -> None:
        self.folded_seq = watermark(self._con)
        for table in TABLES:
            rows = self._con.execute(f"SELECT count(*) FROM {table.name}").fetchall()
            self._sizes[table.name] = int(rows[0][0])
            self._partials[table.name] = 0
        self._wake.set()  # fold whatever was committed but not folded before a stop
        self._thread.start()

    def notify(self) -> None:
        """New events were committed."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Fold now and wait until nothing is left to fold (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._busy or self._wake.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _run(self) -> None:
        # Folding is catch-up work: under contention the writer (acknowledgements) goes first.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FOLD_NICENESS)
        while not self._stopping:
            if not self._wake.wait(IDLE_COMPACT_SECONDS):
                self._compact_when_idle()
                continue
            with self._idle:
                self._busy = True
                self._wake.clear()
            folded = 0
            try:
                with self.lock:
                    folded = self._step()
            except Exception:
                # Answers stay exact without folding (queries read unfolded events raw).
                log.exception("folding events into the rollups failed; will retry")
                self._stop.wait(self._interval)
            finally:
                with self._idle:
                    self._busy = False
                    self._idle.notify_all()
            if folded:  # rest after work, so that folds under load are large
                self._stop.wait(self._interval)

    def _compact_when_idle(self) -> None:
        """No new events for a while: merge and sort whatever partial rows are left."""
        with self._idle:
            self._busy = True
        try:
            with self.lock:
                for table in TABLES:
                    if self._partials.get(table.name):
                        self._sizes[table.name] = compact(self._con, table)
                        self._partials[table.name] = 0
        except duckdb.Error:
            log.exception("compacting the rollups failed; will retry")
        finally:
            with self._idle:
                self._busy = False
                self._idle.notify_all()

    def _step(self) -> int:
        """Fold what is new (a large backlog in steps) and compact where due; events folded."""
        bound, more = fold_bound(self._con, self.folded_seq)
        folded, _, high, _ = fold(self._con, upto=bound)
        self.folded_seq = high
        if more:
            self._wake.set()
        if not folded:
            return 0
        for table in TABLES:
            rows = self._con.execute(f"SELECT count(*) FROM {table.name}").fetchall()
            size = int(rows[0][0])
            partial = size - self._sizes[table.name]
            if partial >= max(self._min_rows, table.compact_share * self._sizes[table.name]):
                self._sizes[table.name] = compact(self._con, table)
            self._partials[table.name] = partial
        return folded
