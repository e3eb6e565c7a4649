"""The hot tenant indexes: each tenant's recent counters summed over influencers, in memory.

A tenant-wide counter query (by platform, campaign or day) reads whole hours from
``rollup_tenant_hour`` and, when its range does not start and end on the hour,
its ragged ends from ``rollup_minute``. That table is keyed by influencer, so an
hour at each end is tens of thousands of rows. Here both are held as numpy arrays
per tenant, summed over influencers (platform, campaign, metric, bucket) and
sorted by bucket: the minutes of the last ``HOT_MINUTE_HOURS`` hours, the hours of
the last ``HOT_TENANT_HOURS``. Older pieces are read from the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt

from hypemeter.backends.embedded.duckdb_store.hot_engagement import (
    WatermarkedIndex,
    code_of,
    column_floats,
    column_ints,
    encode_column,
    runs_of,
)
from hypemeter.metrics.model import Grain

# Ranges reach back a day from now and start inside an hour: a day and a bit more.
HOT_MINUTE_HOURS = 27
HOT_TENANT_HOURS = 8 * 24 + 1  # a week from inside an hour, and room for reading lag
_DIMENSIONS = ("platform", "campaign_id")


@dataclass(frozen=True, slots=True)
class TenantBuckets:
    """One tenant's sums per bucket since ``since_us``, sorted by bucket; codes index
    the vocabularies. ``rows`` counts the rollup rows each sum stands for."""

    since_us: int
    platforms: list[str]
    campaigns: list[str]  # "" is no campaign, as in the rollups
    metrics: list[str]
    platform: npt.NDArray[np.int64]
    campaign: npt.NDArray[np.int64]
    metric: npt.NDArray[np.int64]
    bucket: npt.NDArray[np.int64]
    total: npt.NDArray[np.float64]
    events: npt.NDArray[np.float64]
    rows: npt.NDArray[np.float64]

    @staticmethod
    def answers(by: Sequence[str], influencer_id: str | None, content_id: str | None) -> bool:
        """Whether a counter query with these groupings and filters is tenant-wide."""
        return influencer_id is None and content_id is None and set(by) <= set(_DIMENSIONS)

    def sums(
        self,
        start_us: int,
        end_us: int,
        *,
        metrics: Sequence[str],
        by: Sequence[str],
        platform: str | None,
        campaign: str | None,
        grain_us: int | None,
    ) -> list[tuple[Any, ...]]:
        """Rows of (``by`` values..., bucket, metric, total, events, rows read) over the
        buckets in [start_us, end_us), as the tables' GROUP BY gives them."""
        lo, hi = (int(i) for i in self.bucket.searchsorted([start_us, end_us]))
        wanted = np.zeros(len(self.metrics) + 1, dtype=np.bool_)
        wanted[[self.metrics.index(m) for m in metrics if m in self.metrics]] = True
        keep = wanted[self.metric[lo:hi]]
        codes = {"platform": self.platform[lo:hi], "campaign_id": self.campaign[lo:hi]}
        names = {"platform": self.platforms, "campaign_id": self.campaigns}
        for dim, value in (("platform", platform), ("campaign_id", campaign)):
            if value is not None:
                keep &= codes[dim] == code_of(names[dim], value)
        if "campaign_id" in by:
            keep &= codes["campaign_id"] != code_of(self.campaigns, "")
        picked = np.flatnonzero(keep) + lo
        if not len(picked):
            return []
        # One integer per group (mixed radix: dimensions, bucket slot, metric).
        bucket = self.bucket[picked]
        origin = 0
        slots = 1
        if grain_us is not None:
            bucket = bucket - bucket % grain_us
            origin = int(bucket.min())
            slots = int(bucket.max() - origin) // grain_us + 1
        radix = [len(names[dim]) for dim in by] + [slots, len(self.metrics)]
        digits: list[npt.NDArray[np.int64] | None] = [codes[dim][picked - lo] for dim in by]
        digits += [(bucket - origin) // grain_us if grain_us is not None else None]
        digits += [self.metric[picked]]
        key = np.zeros(len(picked), dtype=np.int64)
        for base, digit in zip(radix, digits, strict=True):
            key *= base
            if digit is not None:
                key += digit
        groups, group = np.unique(key, return_inverse=True)
        sums = [
            np.bincount(group, weights=values[picked], minlength=len(groups)).tolist()
            for values in (self.total, self.events, self.rows)
        ]
        out: list[tuple[Any, ...]] = []
        for i, packed in enumerate(groups.tolist()):
            rest, metric = divmod(packed, radix[-1])
            rest, slot = divmod(rest, radix[-2])
            dims: list[str] = []
            for dim, base in zip(reversed(by), reversed(radix[:-2]), strict=True):
                rest, code = divmod(rest, base)
                dims.insert(0, names[dim][code])
            b = origin + slot * grain_us if grain_us is not None else None
            total, events, rows = sums[0][i], int(sums[1][i]), int(sums[2][i])
            out.append((*dims, b, self.metrics[metric], total, events, rows))
        return out


@dataclass(frozen=True, slots=True)
class TenantSums:
    """A tenant's hot minute and hour entries (None where the tables must answer)."""

    minutes: TenantBuckets | None
    hours: TenantBuckets | None

    def covering(self, grain: Grain, start_us: int) -> TenantBuckets | None:
        """The entry that holds a piece of ``grain`` starting at ``start_us``, if any."""
        entry = self.minutes if grain is Grain.MINUTE else self.hours
        return entry if entry is not None and start_us >= entry.since_us else None


class HotTenantBuckets(WatermarkedIndex[TenantBuckets]):
    """Per-tenant ``TenantBuckets`` of one rollup table."""

    def __init__(self, table: str, hours: int) -> None:
        """``table``: a rollup with platform, campaign_id, metric, bucket, total, events."""
        super().__init__()
        self._table = table
        self.hours = hours

    def _read(self, con: duckdb.DuckDBPyConnection, since: int) -> dict[str, TenantBuckets]:
        sums = (
            "SELECT tenant_id, platform, campaign_id, metric, bucket, sum(total) AS total, "  # noqa: S608
            f"sum(events)::DOUBLE AS events, count(*)::DOUBLE AS n FROM {self._table} "
            "WHERE bucket >= $since GROUP BY ALL ORDER BY tenant_id, bucket"
        )  # a rollup table's name, never user input
        table = con.sql(sums, params={"since": since}).to_arrow_table()
        if not table.num_rows:
            return {}
        platforms, platform = encode_column(table.column("platform"))
        campaigns, campaign = encode_column(table.column("campaign_id"))
        metrics, metric = encode_column(table.column("metric"))
        bucket = column_ints(table, "bucket")
        total, events = column_floats(table, "total"), column_floats(table, "events")
        rows = column_floats(table, "n")
        return {
            tenant: TenantBuckets(
                since,
                platforms,
                campaigns,
                metrics,
                platform[first:last],
                campaign[first:last],
                metric[first:last],
                bucket[first:last],
                total[first:last],
                events[first:last],
                rows[first:last],
            )
            for tenant, (first, last) in runs_of(table.column("tenant_id")).items()
        }

    def _empty(self, since: int) -> TenantBuckets:
        ints, floats = np.zeros(0, dtype=np.int64), np.zeros(0)
        return TenantBuckets(since, [], [], [], ints, ints, ints, ints, floats, floats, floats)
