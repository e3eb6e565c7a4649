"""Trending's aggregator: each tenant's hourly engagement per content item, and tags.

Pure (numpy only), as ``windows``: ``add`` / ``add_tags`` take rows of a load or
of a change set, ``trending`` answers a page from memory, or None when the range
is not whole hours of the window (the store then answers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hypemeter.metrics.queries import Answer, TrendingQuery, TrendingRow
from hypemeter.metrics.sums import NO_SAMPLE, Block, Floats, Ints, Vocabulary
from hypemeter.metrics.windows import Column, Tenants, zeros

TOP_TAGS = 3
MEMO_RANGES = 64


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


class EngagementWindow(Tenants):
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
                {"owner": zeros(len(at)), "content": content[at], "platform": platform[at]},
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
            dims = {"owner": zeros(len(at)), "content": content[at]}
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
