"""The hot hour index: the recent hourly rollup of every influencer, in memory.

Per (tenant, influencer) it holds numpy arrays of the ``rollup_hour`` rows of
the last ``HOT_DAYS`` days, each entry tagged with the fold watermark of the
snapshot it was read in. A query of one influencer's hourly counters sums these
arrays and adds, from the raw events, only what was committed after that
watermark; an answer is therefore the same as from the tables, whatever the
entry's age. The maintainer thread loads every entry at start-up, evicts the
entries of the influencers each fold touched, and reads them all back once
ingest pauses; meanwhile an evicted entry is read again (one small query) by
the next request that needs it. Memory is bounded by the
window: older hours are answered from the tables.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.metrics.model import DAY_US

HOT_DAYS = 35
LOAD_CHUNK_ROWS = 262_144
_COLUMNS = "platform, campaign_id, metric, bucket, sum(total) AS total, sum(events) AS events"
_WATERMARK = "(SELECT value::BIGINT FROM meta WHERE key = 'rollup_seq')"

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class HourSeries:
    """One influencer's hourly rows since ``since_us``, as of fold watermark ``watermark``,
    sorted by metric (codes in name order), then bucket."""

    watermark: int
    since_us: int
    platforms: list[str]
    campaigns: list[str]
    metrics: list[str]
    platform: npt.NDArray[np.int32]
    campaign: npt.NDArray[np.int32]
    metric: npt.NDArray[np.int32]
    bucket: npt.NDArray[np.int64]
    total: npt.NDArray[np.float64]
    events: npt.NDArray[np.int64]
    # Each metric's rows, [first, last): found once, not per query.
    ranges: dict[str, tuple[int, int]] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        codes = np.arange(len(self.metrics), dtype=np.int32)
        firsts = self.metric.searchsorted(codes, "left").tolist()
        lasts = self.metric.searchsorted(codes, "right").tolist()
        ranges = {
            name: (first, last)
            for name, first, last in zip(self.metrics, firsts, lasts, strict=True)
            if last > first
        }
        object.__setattr__(self, "ranges", ranges)

    def sums(
        self,
        *,
        start_us: int,
        end_us: int,
        metrics: Sequence[str],
        platform: str | None,
        campaign: str | None,
        grain_us: int | None,
        per_platform: bool,
    ) -> tuple[list[tuple[str, int | None, str, float, int]], int]:
        """(platform or "", bucket or None, metric, total, events) rows, and rows read."""
        wanted = np.zeros(len(self.metrics) + 1, dtype=np.bool_)
        wanted[[self.metrics.index(m) for m in metrics if m in self.metrics]] = True
        mask = wanted[self.metric]
        mask &= (self.bucket >= start_us) & (self.bucket < end_us)
        for value, vocabulary, codes in (
            (platform, self.platforms, self.platform),
            (campaign, self.campaigns, self.campaign),
        ):
            if value is not None:
                mask &= codes == (vocabulary.index(value) if value in vocabulary else -1)
        picked = np.flatnonzero(mask)
        if not len(picked):
            return [], 0
        width_m = len(self.metrics)
        width_p = len(self.platforms) if per_platform else 1
        buckets = self.bucket[picked]
        if grain_us is not None:
            buckets = buckets - buckets % grain_us
            origin = int(buckets.min())
            slot = (buckets - origin) // grain_us
        else:
            origin, slot = 0, np.zeros(len(picked), dtype=np.int64)
        plat = self.platform[picked] if per_platform else np.zeros(len(picked), dtype=np.int32)
        key = (slot * width_p + plat) * width_m + self.metric[picked]
        totals_all = np.bincount(key, weights=self.total[picked])
        counts_all = np.bincount(key, weights=self.events[picked])
        groups = np.flatnonzero(counts_all)
        totals, counts = totals_all[groups], counts_all[groups]
        rows: list[tuple[str, int | None, str, float, int]] = []
        for group, total, count in zip(
            groups.tolist(), totals.tolist(), counts.tolist(), strict=True
        ):
            rest, metric = divmod(group, width_m)
            slot_of, plat_of = divmod(rest, width_p)
            rows.append(
                (
                    self.platforms[plat_of] if per_platform else "",
                    None if grain_us is None else origin + slot_of * grain_us,
                    self.metrics[metric],
                    float(total),
                    int(count),
                )
            )
        return rows, len(picked)

    def rows(self, first: int, last: int) -> HourSeries:
        """Rows ``first`` to ``last`` (views), with the same vocabularies."""
        cut = slice(first, last)
        return HourSeries(
            self.watermark,
            self.since_us,
            self.platforms,
            self.campaigns,
            self.metrics,
            self.platform[cut],
            self.campaign[cut],
            self.metric[cut],
            self.bucket[cut],
            self.total[cut],
            self.events[cut],
        )

    def matrix(
        self,
        *,
        start_us: int,
        end_us: int,
        metrics: Sequence[str],
        platform: str | None,
        campaign: str | None,
        origin_us: int,
        grain_us: int,
        buckets: int,
    ) -> tuple[npt.NDArray[np.float64], int]:
        """Sums per (metric, bucket of ``grain_us`` from ``origin_us``), and rows read."""
        out = np.zeros((len(metrics), buckets), dtype=np.float64)
        read = 0
        wanted = [
            (vocabulary.index(value) if value in vocabulary else -1, codes)
            for value, vocabulary, codes in (
                (platform, self.platforms, self.platform),
                (campaign, self.campaigns, self.campaign),
            )
            if value is not None
        ]
        for i, name in enumerate(metrics):
            span = self.ranges.get(name)
            if span is None:
                continue
            # Rows are sorted by metric, then bucket: each metric's range is a slice.
            first, last = span
            hours = self.bucket[first:last]
            lo = first + int(hours.searchsorted(start_us))
            hi = first + int(hours.searchsorted(end_us))
            totals, bucket = self.total[lo:hi], self.bucket[lo:hi]
            for code_of, codes in wanted:
                keep = codes[lo:hi] == code_of
                totals, bucket = totals[keep], bucket[keep]
            if len(bucket):
                out[i] = np.bincount(
                    (bucket - origin_us) // grain_us, weights=totals, minlength=buckets
                )
                read += len(bucket)
        return out, read


class HotHours:
    """The index and its lock; safe to use from the query threads and the maintainer."""

    def __init__(self) -> None:
        self._entries: dict[Key, HourSeries] = {}
        self._lock = threading.Lock()
        self.loaded = False
        self.stale = False  # folds changed some influencer since the last full load
        # Bumped by ``clear``: an entry read before a drop is not put back after it.
        self._generation = 0

    def since(self, now_us: int) -> int:
        return (now_us - HOT_DAYS * DAY_US) // DAY_US * DAY_US

    def load_all(self, con: duckdb.DuckDBPyConnection, now_us: int) -> int:
        """Read every influencer's recent hours in one statement; entries made.

        The rows arrive in chunks and only their codes and numbers are kept, so
        the strings of the whole table are never in memory at once.
        """
        since = self.since(now_us)
        reader = con.sql(
            f"SELECT tenant_id, influencer_id, {_COLUMNS}, {_WATERMARK} AS w "
            f"FROM rollup_hour WHERE bucket >= {since} AND events > 0 "
            "GROUP BY tenant_id, influencer_id, platform, campaign_id, metric, bucket "
            "ORDER BY tenant_id, influencer_id, metric, bucket"
        ).to_arrow_reader(LOAD_CHUNK_ROWS)
        loader = _Loader()
        for batch in reader:
            loader.add(pa.Table.from_batches([batch]))
        entries: dict[Key, HourSeries] = {}
        if loader.rows:
            # Encoded and converted once for the whole table; each entry holds slices.
            whole = loader.series(since)
            bounds = [*loader.starts, loader.rows]
            for owner, (first, last) in zip(loader.owners, itertools.pairwise(bounds), strict=True):
                entries[owner] = whole.rows(first, last)
        with self._lock:
            self._entries = entries
            self.loaded = True
            self.stale = False
        return len(entries)

    def get(
        self, con: duckdb.DuckDBPyConnection, tenant_id: str, influencer_id: str, now_us: int
    ) -> HourSeries | None:
        """The entry, read now if missing; None before the index was first loaded."""
        if not self.loaded:
            return None
        key = (tenant_id, influencer_id)
        with self._lock:
            found = self._entries.get(key)
            generation = self._generation
        if found is not None:
            return found
        since = self.since(now_us)
        table = con.sql(
            f"SELECT w.value::BIGINT AS w, h.* FROM (SELECT value FROM meta "
            "WHERE key = 'rollup_seq') w LEFT JOIN ("
            f"SELECT {_COLUMNS} FROM rollup_hour WHERE tenant_id = ? AND influencer_id = ? "
            f"AND bucket >= {since} AND events > 0 "
            "GROUP BY platform, campaign_id, metric, bucket) h ON TRUE ORDER BY metric, bucket",
            params=[tenant_id, influencer_id],
        ).to_arrow_table()
        watermark = int(table.column("w")[0].as_py())
        table = table.filter(pc.is_valid(table.column("bucket")))
        entry = _series(table, watermark, since)
        with self._lock:
            # Dropped meanwhile (an erasure or a purge rewrote rollups, and the watermark
            # stayed): this entry may hold what they removed, so it is not kept.
            if self.loaded and self._generation == generation:
                self._entries[key] = entry
        return entry

    def peek(self, tenant_id: str, influencer_id: str) -> HourSeries | None:
        """The entry if it is in memory now; None otherwise (never reads the database)."""
        if not self.loaded:
            return None
        with self._lock:
            return self._entries.get((tenant_id, influencer_id))

    def evict(self, keys: Iterable[Key]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)
                self.stale = True

    def clear(self) -> None:
        with self._lock:
            self._entries = {}
            self.loaded = False
            self._generation += 1


class _Loader:
    """Accumulates chunks of ``load_all``'s rows as codes and numbers."""

    def __init__(self) -> None:
        self.rows = 0
        self.watermark = 0
        self.owners: list[Key] = []
        self.starts: list[int] = []  # the first row of each owner
        self._last: str | None = None
        # Codes in order of first sight; renumbered in name order at the end.
        self._seen: dict[str, dict[str, int]] = {"platform": {}, "campaign_id": {}, "metric": {}}
        self._codes: dict[str, list[npt.NDArray[np.int32]]] = {k: [] for k in self._seen}
        self._numbers: dict[str, list[npt.NDArray[np.generic]]] = {
            "bucket": [],
            "total": [],
            "events": [],
        }

    def add(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if not self.rows:
            self.watermark = int(table.column("w")[0].as_py())
        # Where (tenant, influencer) changes, found in Arrow: no Python string per row.
        owner = pc.binary_join_element_wise(
            table.column("tenant_id"), table.column("influencer_id"), "\x00"
        ).combine_chunks()
        changed = pc.not_equal(owner.slice(1), owner.slice(0, len(owner) - 1))
        starts = (np.flatnonzero(changed.to_numpy(zero_copy_only=False)) + 1).tolist()
        if owner[0].as_py() != self._last:
            starts.insert(0, 0)
        for start in starts:
            tenant, influencer = owner[start].as_py().split("\x00", 1)
            self.owners.append((tenant, influencer))
            self.starts.append(self.rows + start)
        self._last = owner[len(owner) - 1].as_py()
        for name, seen in self._seen.items():
            column = table.column(name).combine_chunks()
            for value in pc.unique(column).drop_null().to_pylist():
                seen.setdefault(value, len(seen))
            codes = pc.index_in(column, value_set=pa.array(list(seen), column.type))
            self._codes[name].append(
                np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False), np.int32)
            )
        dtypes = {"bucket": np.int64, "total": np.float64, "events": np.int64}
        for name, dtype in dtypes.items():
            self._numbers[name].append(np.array(table.column(name).to_numpy(), dtype=dtype))
        self.rows += table.num_rows

    def series(self, since_us: int) -> HourSeries:
        vocabularies: list[list[str]] = []
        codes: list[npt.NDArray[np.int32]] = []
        for name, seen in self._seen.items():
            names = sorted(seen)
            renumber = np.full(len(seen) + 1, -1, dtype=np.int32)  # the last one keeps -1
            renumber[[seen[n] for n in names]] = np.arange(len(names), dtype=np.int32)
            vocabularies.append(names)
            codes.append(renumber[np.concatenate(self._codes[name])])
        platforms, campaigns, metrics = vocabularies
        platform, campaign, metric = codes
        return HourSeries(
            self.watermark,
            since_us,
            platforms,
            campaigns,
            metrics,
            platform,
            campaign,
            metric,
            np.concatenate(self._numbers["bucket"]).astype(np.int64, copy=False),
            np.concatenate(self._numbers["total"]).astype(np.float64, copy=False),
            np.concatenate(self._numbers["events"]).astype(np.int64, copy=False),
        )


def _codes(column: pa.ChunkedArray) -> tuple[list[str], npt.NDArray[np.int32]]:
    """The distinct values in name order, and each row's index among them (-1 for null)."""
    values = column.combine_chunks()
    vocabulary = sorted(pc.unique(values).drop_null().to_pylist())
    codes = pc.fill_null(pc.index_in(values, value_set=pa.array(vocabulary, values.type)), -1)
    return vocabulary, np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int32)


def _series(table: pa.Table, watermark: int, since_us: int) -> HourSeries:
    platforms, platform = _codes(table.column("platform"))
    campaigns, campaign = _codes(table.column("campaign_id"))
    metrics, metric = _codes(table.column("metric"))

    def numbers(name: str, dtype: type) -> npt.NDArray[np.generic]:
        return np.array(table.column(name).to_numpy(), dtype=dtype)

    return HourSeries(
        watermark,
        since_us,
        platforms,
        campaigns,
        metrics,
        platform,
        campaign,
        metric,
        numbers("bucket", np.int64),  # type: ignore[arg-type]
        numbers("total", np.float64),  # type: ignore[arg-type]
        numbers("events", np.int64),  # type: ignore[arg-type]
    )
