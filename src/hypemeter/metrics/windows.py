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
    TrendingQuery,
    TrendingRow,
)
from hypemeter.metrics.sums import (
    NO_SAMPLE,
    NONE,
    Block,
    BucketLog,
    Floats,
    Ints,
    Vocabulary,
    group_sums,
)

TOP_TAGS = 3
MEMO_RANGES = 64
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


@dataclass(frozen=True, slots=True)
class EngagementRows:
    """Engagement per (tenant, content, platform, hour): sums, latest time and sample."""

    tenant: Column
    content: Column
    platform: Column
    bucket: Ints
    total: Floats
    events: Floats
    latest: Ints
    sample_t: Ints  # NO_SAMPLE where no event of the row has a text
    texts: npt.NDArray[np.object_]


@dataclass(frozen=True, slots=True)
class TagRows:
    """Tag counts of engagement events per (tenant, content, platform, tag, hour)."""

    tenant: Column
    content: Column
    platform: Column
    tag: Column
    bucket: Ints
    n: Floats


class _Tenants:
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


class CounterWindow(_Tenants):
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
            tenant_wide = {"owner": _zeros(len(at))}
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


class EngagementWindow(_Tenants):
    """Hourly engagement of every tenant's content items, and their tags: trending."""

    def __init__(self, since_us: int) -> None:
        super().__init__(since_us)
        self.contents, self.platforms, self.tags = Vocabulary(), Vocabulary(), Vocabulary()
        # The sums of a range, kept while the tenant's rows stay as they were.
        self._sums: dict[tuple[str, int, int, str | None], tuple[int, _Sums]] = {}

    def add(self, rows: EngagementRows) -> None:
        content = self.contents.encode(rows.content.values)[rows.content.index]
        platform = self.platforms.encode(rows.platform.values)[rows.platform.index]
        for logs, at in self.split(rows.tenant):
            block = Block(
                {"owner": _zeros(len(at)), "content": content[at], "platform": platform[at]},
                rows.bucket[at],
                {"total": rows.total[at], "events": rows.events[at]},
                {"latest": rows.latest[at], "sample_t": rows.sample_t[at]},
                rows.texts[at],
            )
            self.log(logs, "engagement").add(block)

    def add_tags(self, rows: TagRows) -> None:
        content = self.contents.encode(rows.content.values)[rows.content.index]
        platform = self.platforms.encode(rows.platform.values)[rows.platform.index]
        tag = self.tags.encode(rows.tag.values)[rows.tag.index]
        for logs, at in self.split(rows.tenant):
            dims = {"owner": _zeros(len(at)), "content": content[at]}
            dims |= {"platform": platform[at], "tag": tag[at]}
            self.log(logs, "tags").add(Block(dims, rows.bucket[at], {"n": rows.n[at]}, {}))

    def trending(self, tenant_id: str, q: TrendingQuery) -> Answer[TrendingRow] | None:
        """One page of ``q`` from memory, or None when the store must answer."""
        if not self.answers(q.start_us, q.end_us):
            return None
        sums = self._range_sums(tenant_id, q)
        if sums is None:
            return Answer([], 0)
        rows, count, events, total = sums.rows, sums.count, sums.events, sums.total
        content = rows.dims["content"]
        size = len(count)
        listed = sums.ranked[events[sums.ranked] >= q.min_interactions]
        page = listed
        if q.after is not None:
            ranks = self.contents.ranks()
            after_total, after_id = q.after
            beyond = self.contents.rank_after(after_id)
            mine = total[listed]
            later = (mine < after_total) | ((mine == after_total) & (ranks[listed] >= beyond))
            page = listed[later]
        page = page[: q.limit]
        read = int(count[listed].sum())
        if not len(page):
            return Answer([], read)
        mine_rows = np.concatenate(
            [sums.by_content[sums.bounds[c] : sums.bounds[c + 1]] for c in page.tolist()]
        )
        in_page = np.zeros(len(content), dtype=np.bool_)
        in_page[mine_rows] = True
        latest = np.full(size, NO_SAMPLE, dtype=np.int64)
        np.maximum.at(latest, content[mine_rows], rows.maxes["latest"][mine_rows])
        samples = _samples(rows, in_page)
        tags = self._tags(tenant_id, q, page)
        return Answer(
            [
                TrendingRow(
                    self.contents.names[code] or "",
                    int(events[code]),
                    float(total[code]),
                    int(latest[code]),
                    samples.get(code),
                    tags.get(code, ()),
                )
                for code in page.tolist()
            ],
            read,
        )

    def _range_sums(self, tenant_id: str, q: TrendingQuery) -> _Sums | None:
        log = self.of(tenant_id, "engagement")
        if log is None:
            return None
        key = (tenant_id, q.start_us, q.end_us, q.platform)
        found = self._sums.get(key)
        if found is not None and found[0] == log.version:
            return found[1]
        rows = log.rows(q.start_us, q.end_us)
        if rows is not None and q.platform is not None:
            platform = self.platforms.code(q.platform)
            rows = rows.take(np.flatnonzero(rows.dims["platform"] == platform))
        if rows is None or not len(rows):
            return None
        size = len(self.contents)
        content = rows.dims["content"]
        count = np.bincount(content, minlength=size)
        total = np.bincount(content, weights=rows.sums["total"], minlength=size)
        present = np.flatnonzero(count)
        ranks = self.contents.ranks()
        by_content = np.argsort(content, kind="stable")
        sums = _Sums(
            rows,
            count,
            np.bincount(content, weights=rows.sums["events"], minlength=size).astype(np.float64),
            total.astype(np.float64),
            present[np.lexsort((ranks[present], -total[present]))],
            by_content,
            np.searchsorted(content[by_content], np.arange(size + 1)),
        )
        if len(self._sums) >= MEMO_RANGES:
            self._sums.pop(next(iter(self._sums)))
        self._sums[key] = (log.version, sums)
        return sums

    def _tags(self, tenant_id: str, q: TrendingQuery, page: Ints) -> dict[int, tuple[str, ...]]:
        log = self.of(tenant_id, "tags")
        rows = None if log is None else log.rows(q.start_us, q.end_us)
        if rows is None:
            return {}
        keep = np.isin(rows.dims["content"], page)
        if q.platform is not None:
            keep &= rows.dims["platform"] == self.platforms.code(q.platform)
        counts: dict[int, dict[int, float]] = {}
        for c, t, n in zip(
            rows.dims["content"][keep].tolist(),
            rows.dims["tag"][keep].tolist(),
            rows.sums["n"][keep].tolist(),
            strict=True,
        ):
            mine = counts.setdefault(c, {})
            mine[t] = mine.get(t, 0.0) + n
        names = self.tags.names
        return {
            c: tuple(
                names[t] or "" for t in sorted(mine, key=lambda t: (-mine[t], names[t] or ""))
            )[:TOP_TAGS]
            for c, mine in counts.items()
        }


@dataclass(frozen=True, slots=True)
class _Sums:
    """Trending's sums of one range per content code, and the rows they came from."""

    rows: Block
    count: Ints
    events: Floats
    total: Floats
    ranked: Ints  # content codes with rows, by total descending, then by name
    by_content: Ints  # row numbers in content code order
    bounds: Ints  # each code's [first, last) in ``by_content``


def _samples(rows: Block, in_page: npt.NDArray[np.bool_]) -> dict[int, str]:
    """Per content code of the page, the text of its greatest (time, text)."""
    assert rows.texts is not None
    picked = np.flatnonzero(in_page & (rows.maxes["sample_t"] != NO_SAMPLE))
    best: dict[int, tuple[int, str]] = {}
    for c, t, text in zip(
        rows.dims["content"][picked].tolist(),
        rows.maxes["sample_t"][picked].tolist(),
        rows.texts[picked].tolist(),
        strict=True,
    ):
        if text is None:
            continue
        held = best.get(c)
        if held is None or (t, text) > held:
            best[c] = (t, text)
    return {c: text for c, (_, text) in best.items()}


def _zeros(n: int) -> npt.NDArray[np.int32]:
    """The owner of rows sorted by bucket only."""
    return np.zeros(n, dtype=np.int32)


def window_start(now_us: int, days: int) -> int:
    """The first hour a window of ``days`` days before ``now_us`` holds."""
    return (now_us - days * DAY_US) // HOUR_US * HOUR_US
