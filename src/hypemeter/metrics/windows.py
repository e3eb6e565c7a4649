"""The query caches' aggregators: initialize from a load, add change sets, answer queries.

Pure (numpy only), in the shape of stream-processing windows: ``add`` takes rows
of counted events (from a load of the rollups, or from one change set), and
``counters`` / ``matrix`` / ``trending`` answer a query from memory, or return
None when the window does not hold the whole answer (the store then answers).
A window holds whole hours from ``since_us`` on: a range that starts or ends
inside an hour, or before ``since_us``, is never answered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hypemeter.metrics.model import DAY_US, HOUR_US, Grain
from hypemeter.metrics.queries import (
    Answer,
    CounterMatrix,
    CounterQuery,
    CounterRow,
)
from hypemeter.metrics.sums import (
    NONE,
    Block,
    BucketLog,
    Floats,
    Ints,
    Vocabulary,
    group_sums,
)

_GROUPABLE = ("influencer_id", "platform", "campaign_id")


@dataclass(frozen=True, slots=True)
class Column:
    """A string column: its distinct values, and each row's index among them."""

    values: Sequence[str | None]
    index: Ints


@dataclass(frozen=True, slots=True)
class CounterRows:
    """Counted values per (tenant, influencer, platform, campaign, metric, hour)."""

    tenant: Column
    influencer: Column
    platform: Column
    campaign: Column
    metric: Column
    bucket: Ints
    total: Floats
    events: Floats


class Tenants:
    """Per-tenant logs, split from rows of every tenant."""

    def __init__(self, since_us: int) -> None:
        self.since_us = since_us
        self.tenants = Vocabulary()
        self.logs: dict[int, dict[str, BucketLog]] = {}

    def split(self, tenant: Column) -> list[tuple[dict[str, BucketLog], npt.NDArray[np.intp]]]:
        codes = self.tenants.encode(tenant.values)[tenant.index]
        out = []
        for code in np.unique(codes).tolist():
            logs = self.logs.get(code)
            if logs is None:
                logs = self.logs[code] = {}
            out.append((logs, np.flatnonzero(codes == code)))
        return out

    def log(self, logs: dict[str, BucketLog], name: str) -> BucketLog:
        found = logs.get(name)
        if found is None:
            found = logs[name] = BucketLog(self.since_us)
        return found

    def of(self, tenant_id: str, name: str) -> BucketLog | None:
        logs = self.logs.get(self.tenants.code(tenant_id))
        return None if logs is None else logs.get(name)

    def logs_of_all(self) -> list[BucketLog]:
        return [log for logs in self.logs.values() for log in logs.values()]

    def advance(self, since_us: int) -> None:
        """Hold buckets from ``since_us`` on only (older rows go at the next merges)."""
        if since_us > self.since_us:
            self.since_us = since_us
            for logs in self.logs.values():
                for log in logs.values():
                    log.advance(since_us)

    def answers(self, start_us: int, end_us: int) -> bool:
        return start_us >= self.since_us and start_us % HOUR_US == end_us % HOUR_US == 0


class CounterWindow(Tenants):
    """Hourly counter sums of every tenant: per influencer, and tenant-wide."""

    def __init__(self, since_us: int) -> None:
        super().__init__(since_us)
        self.vocab = {d: Vocabulary() for d in (*_GROUPABLE, "metric")}

    def add(self, rows: CounterRows) -> None:
        dims = {
            name: self.vocab[name].encode(column.values)[column.index]
            for name, column in (
                ("influencer_id", rows.influencer),
                ("platform", rows.platform),
                ("campaign_id", rows.campaign),
                ("metric", rows.metric),
            )
        }
        for logs, at in self.split(rows.tenant):
            picked = {k: v[at] for k, v in dims.items()}
            sums = {"total": rows.total[at], "events": rows.events[at]}
            self.log(logs, "influencer").add(Block(picked, rows.bucket[at], sums, {}))
            tenant_wide = {"owner": zeros(len(at))}
            tenant_wide |= {k: v for k, v in picked.items() if k != "influencer_id"}
            self.log(logs, "tenant").add(Block(tenant_wide, rows.bucket[at], dict(sums), {}))

    def holds(self, q: CounterQuery) -> bool:
        """Whether the window holds the whole answer to ``q``."""
        if q.filters.content_id is not None or not set(q.by) <= set(_GROUPABLE):
            return False
        return q.grain is not Grain.MINUTE and self.answers(q.start_us, q.end_us)

    def _rows(self, tenant_id: str, q: CounterQuery) -> Block | None:
        """The rows ``q`` sums, or None when there are none."""
        f = q.filters
        per_influencer = f.influencer_id is not None or "influencer_id" in q.by
        log = self.of(tenant_id, "influencer" if per_influencer else "tenant")
        if log is None:
            return None
        owner = None
        if f.influencer_id is not None:
            owner = self.vocab["influencer_id"].code(f.influencer_id)
            if owner < 0:
                return None
        rows = log.rows(q.start_us, q.end_us, owner)
        if rows is None:
            return None
        metrics = self.vocab["metric"]
        wanted = np.zeros(len(metrics), dtype=np.bool_)
        wanted[[c for c in (metrics.code(m) for m in q.metrics) if c >= 0]] = True
        keep = wanted[rows.dims["metric"]]
        for name, value in (("platform", f.platform), ("campaign_id", f.campaign_id)):
            if value is not None:
                keep &= rows.dims[name] == self.vocab[name].code(value)
        if "campaign_id" in q.by:
            keep &= rows.dims["campaign_id"] != NONE
        return rows.take(np.flatnonzero(keep))

    def counters(self, tenant_id: str, q: CounterQuery) -> Answer[CounterRow] | None:
        """The answer to ``q`` from memory, or None when the store must answer."""
        if not self.holds(q):
            return None
        rows = self._rows(tenant_id, q)
        if rows is None or not len(rows):
            return Answer([], 0)
        grain = q.grain.us if q.grain is not None else None
        slots, origin = np.zeros(len(rows), dtype=np.int64), 0
        if grain is not None:
            buckets = rows.bucket - rows.bucket % grain
            origin = int(buckets.min())
            slots = (buckets - origin) // grain
        digits = [(rows.dims[d].astype(np.int64), len(self.vocab[d])) for d in q.by]
        digits += [(slots, int(slots.max()) + 1)]
        digits += [(rows.dims["metric"].astype(np.int64), len(self.vocab["metric"]))]
        groups, sums = group_sums(digits, [rows.sums["total"], rows.sums["events"]])
        out = []
        for parts, (total, events) in zip(groups, sums, strict=True):
            key = tuple(self.vocab[d].names[c] or "" for d, c in zip(q.by, parts, strict=False))
            bucket = None if grain is None else origin + parts[-2] * grain
            metric = self.vocab["metric"].names[parts[-1]] or ""
            out.append(CounterRow(key, bucket, metric, float(total), int(events)))
        return Answer(out, len(rows))

    def matrix(self, tenant_id: str, q: CounterQuery) -> CounterMatrix | None:
        """A bucketed query without ``by`` as arrays, or None when the store must answer."""
        if q.by or q.grain is None or not self.holds(q):
            return None
        rows = self._rows(tenant_id, q)
        grain = q.grain.us
        origin = q.start_us - q.start_us % grain
        size = len(range(origin, q.end_us, grain))
        values = {m: np.zeros(size, dtype=np.float64) for m in q.metrics}
        if rows is None or not len(rows):
            return CounterMatrix(origin, grain, values, 0)
        slot = (rows.bucket - origin) // grain
        names = self.vocab["metric"].names
        for code in np.unique(rows.dims["metric"]).tolist():
            mine = rows.dims["metric"] == code
            values[names[code] or ""] = np.bincount(
                slot[mine], weights=rows.sums["total"][mine], minlength=size
            ).astype(np.float64)
        return CounterMatrix(origin, grain, values, len(rows))


def zeros(n: int) -> npt.NDArray[np.int32]:
    """The owner of rows sorted by bucket only."""
    return np.zeros(n, dtype=np.int32)


def window_start(now_us: int, days: int) -> int:
    """The first hour a window of ``days`` days before ``now_us`` holds."""
    return (now_us - days * DAY_US) // HOUR_US * HOUR_US
