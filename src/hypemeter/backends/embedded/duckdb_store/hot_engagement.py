"""The hot engagement index: each tenant's recent per-content engagement hours, in memory.

Trending ranks every content item of a tenant over whole hours. From the tables
that is a GROUP BY over a day of ``rollup_engagement_hour`` rows, then the
sample texts and tags of the page, on every request. Here the same rows (and
the tag rows) of the last ``HOT_HOURS`` hours are held as numpy arrays sorted by
bucket, so a query is a slice, a few ``bincount`` calls and a sort.

An index answers only for the fold watermark it was read at: a query uses it
when DuckDB has committed nothing since (otherwise the tables answer), so an
answer from it is the tables' answer. It holds whole hours only: a range that
starts or ends inside an hour needs the raw events at its ends, so the tables
answer it. The maintainer thread reads it at start-up and again when ingest
pauses after folds; an erasure or a retention purge drops it (they rewrite
rollups without a new commit).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from hypemeter.metrics.model import HOUR_US
from hypemeter.metrics.queries import Answer, TrendingQuery, TrendingRow

HOT_HOURS = 72
MAX_WINDOWS = 16  # window sums kept per entry
NO_SAMPLE = np.iinfo(np.int64).min
E = TypeVar("E")
_WATERMARK = "(SELECT value::BIGINT FROM meta WHERE key = 'rollup_seq')"


@dataclass(frozen=True, slots=True)
class EngagementHours:
    """One tenant's engagement rows since ``since_us``, sorted by bucket; codes index the
    vocabularies, which are in name order."""

    since_us: int
    contents: list[str]
    platforms: list[str]
    tags: list[str]
    content: npt.NDArray[np.int64]
    platform: npt.NDArray[np.int64]
    bucket: npt.NDArray[np.int64]
    events: npt.NDArray[np.float64]
    total: npt.NDArray[np.float64]
    latest: npt.NDArray[np.int64]
    sample_t: npt.NDArray[np.int64]  # NO_SAMPLE where the hour has no text
    sample_text: list[str | None]
    tag_content: npt.NDArray[np.int64]
    tag_platform: npt.NDArray[np.int64]
    tag_bucket: npt.NDArray[np.int64]
    tag: npt.NDArray[np.int64]
    tag_n: npt.NDArray[np.float64]

    # Window sums, each read once per (start, end, platform): an entry never changes.
    windows: dict[tuple[int, int, str | None], _Window] = field(
        default_factory=dict, init=False, compare=False
    )

    def answers(self, q: TrendingQuery) -> bool:
        """Whether the entry holds the whole answer to ``q``: whole hours since ``since_us``."""
        return q.start_us >= self.since_us and q.start_us % HOUR_US == q.end_us % HOUR_US == 0

    def trending(self, q: TrendingQuery, top_tags: int) -> Answer[TrendingRow]:
        """The page of ``q``, as the tables give it: by engagement, then content id."""
        window = self._window(q.start_us, q.end_us, q.platform)
        ranked = window.ranked
        listed = ranked[window.events[ranked] >= q.min_interactions]
        page = listed
        if q.after is not None:
            after_total, after_id = q.after
            beyond = bisect.bisect_right(self.contents, after_id)  # codes past that id
            mine = window.total[listed]
            page = listed[(mine < after_total) | ((mine == after_total) & (listed >= beyond))]
        page = page[: q.limit]
        if not len(page):
            return Answer([], 0)
        out = []
        for code, counts in zip(page.tolist(), window.tags[page].tolist(), strict=True):
            tags = sorted((-n, t) for t, n in enumerate(counts) if n)[:top_tags]
            out.append(
                TrendingRow(
                    self.contents[code],
                    int(window.events[code]),
                    float(window.total[code]),
                    int(window.latest[code]),
                    window.samples.get(code),
                    tuple(self.tags[t] for _, t in tags),
                )
            )
        return Answer(out, int(window.count[listed].sum()))

    def _window(self, start_us: int, end_us: int, platform: str | None) -> _Window:
        key = (start_us, end_us, platform)
        found = self.windows.get(key)
        if found is None:
            found = self._sums(start_us, end_us, platform)
            if len(self.windows) >= MAX_WINDOWS:
                self.windows.pop(next(iter(self.windows)), None)
            self.windows[key] = found
        return found

    def _sums(self, start_us: int, end_us: int, platform: str | None) -> _Window:
        """Per content item over whole hours: rows, events, total, latest, sample, tags."""
        size = len(self.contents)
        lo, hi = (int(i) for i in self.bucket.searchsorted([start_us, end_us]))
        rows = np.arange(lo, hi)
        if platform is not None:
            rows = rows[self.platform[lo:hi] == code_of(self.platforms, platform)]
        content = self.content[rows]
        count = np.bincount(content, minlength=size)
        total = _weighted(content, self.total[rows], size)
        latest = np.full(size, NO_SAMPLE, dtype=np.int64)
        np.maximum.at(latest, content, self.latest[rows])
        present = np.flatnonzero(count)
        width = len(self.tags)
        tlo, thi = (int(i) for i in self.tag_bucket.searchsorted([start_us, end_us]))
        keep = np.ones(thi - tlo, dtype=np.bool_)
        if platform is not None:
            keep = self.tag_platform[tlo:thi] == code_of(self.platforms, platform)
        key = self.tag_content[tlo:thi][keep] * width + self.tag[tlo:thi][keep]
        tags = _weighted(key, self.tag_n[tlo:thi][keep], size * width)
        return _Window(
            count,
            _weighted(content, self.events[rows], size),
            total,
            latest,
            present[np.lexsort((present, -total[present]))],
            self._samples(rows),
            tags.reshape(size, width),
        )

    def _samples(self, rows: npt.NDArray[np.int64]) -> dict[int, str]:
        """Per content code, the text of the greatest (t, text) among ``rows``."""
        rows = rows[self.sample_t[rows] != NO_SAMPLE]
        if not len(rows):
            return {}
        content, at = self.content[rows], self.sample_t[rows]
        order = np.lexsort((at, content))  # by content, then t: each content's last is its max
        content, at, rows = content[order], at[order], rows[order]
        last = np.flatnonzero(np.append(content[1:] != content[:-1], True))
        best = {int(c): self.sample_text[r] for c, r in zip(content[last], rows[last], strict=True)}
        # Where the greatest t is shared, the greatest text wins, as in the tables.
        tied = np.flatnonzero((content[1:] == content[:-1]) & (at[1:] == at[:-1]))
        for i in tied.tolist():
            code, other = int(content[i]), self.sample_text[int(rows[i])]
            if at[i] == at[last[np.searchsorted(content[last], code)]] and other is not None:
                held = best[code]
                if held is None or other > held:
                    best[code] = other
        return {code: text for code, text in best.items() if text is not None}


@dataclass(frozen=True, slots=True)
class _Window:
    count: npt.NDArray[np.int64]  # rows per content code
    events: npt.NDArray[np.float64]
    total: npt.NDArray[np.float64]
    latest: npt.NDArray[np.int64]
    ranked: npt.NDArray[np.int64]  # codes with rows, by total descending, then code
    samples: dict[int, str]
    tags: npt.NDArray[np.float64]  # (content code, tag code) -> count


class WatermarkedIndex(Generic[E]):
    """Per-tenant entries read from the rollups in one snapshot, and its fold watermark.

    ``get`` hands an entry out only while nothing newer than that watermark is
    committed, so an answer from it equals the tables' answer.
    """

    hours = HOT_HOURS

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, E] = {}
        self.watermark: int | None = None  # None: not loaded (or dropped)
        self.stale = True
        self._since = 0

    def load_all(self, con: duckdb.DuckDBPyConnection, now_us: int) -> int:
        """Read every tenant's entry in one snapshot; tenants read."""
        since = (now_us // HOUR_US - self.hours) * HOUR_US
        con.execute("BEGIN TRANSACTION")
        try:
            watermark = int(con.execute(f"SELECT coalesce({_WATERMARK}, 0)").fetchall()[0][0])
            entries = self._read(con, since)
        finally:
            con.execute("ROLLBACK")
        with self._lock:
            self._entries = entries
            self._since = since
            self.watermark = watermark
            self.stale = False
        return len(entries)

    def get(self, tenant_id: str, committed: int) -> E | None:
        """The tenant's entry when the index was read at ``committed`` (nothing newer
        is committed); None when the tables must answer."""
        with self._lock:
            if self.watermark is None or self.watermark < committed:
                return None
            found = self._entries.get(tenant_id)
            return found if found is not None else self._empty(self._since)

    def clear(self) -> None:
        with self._lock:
            self._entries = {}
            self.watermark = None
            self.stale = True

    def _read(self, con: duckdb.DuckDBPyConnection, since: int) -> dict[str, E]:
        raise NotImplementedError

    def _empty(self, since: int) -> E:
        raise NotImplementedError


class HotEngagement(WatermarkedIndex[EngagementHours]):
    """Per-tenant ``EngagementHours``."""

    def _read(self, con: duckdb.DuckDBPyConnection, since: int) -> dict[str, EngagementHours]:
        hours = con.sql(
            "SELECT tenant_id, content_id, platform, bucket, sum(events)::DOUBLE AS events, "
            "sum(total) AS total, max(latest) AS latest, max(sample) AS sample "
            "FROM rollup_engagement_hour WHERE bucket >= $since "
            "GROUP BY ALL ORDER BY tenant_id, bucket, content_id",
            params={"since": since},
        ).to_arrow_table()
        tags = con.sql(
            "SELECT tenant_id, content_id, platform, bucket, tag, sum(n)::DOUBLE AS n "
            "FROM rollup_engagement_tags_hour WHERE bucket >= $since "
            "GROUP BY ALL ORDER BY tenant_id, bucket",
            params={"since": since},
        ).to_arrow_table()
        return _entries(hours, tags, since)

    def _empty(self, since: int) -> EngagementHours:
        return _empty(since)


def _weighted(
    codes: npt.NDArray[np.int64], weights: npt.NDArray[np.float64], size: int
) -> npt.NDArray[np.float64]:
    return np.bincount(codes, weights=weights, minlength=size).astype(np.float64, copy=False)


def code_of(vocabulary: list[str], value: str) -> int:
    """``value``'s index in a sorted vocabulary, or -1 when it is not there."""
    at = bisect.bisect_left(vocabulary, value)
    return at if at < len(vocabulary) and vocabulary[at] == value else -1


def encode_column(column: pa.ChunkedArray) -> tuple[list[str], npt.NDArray[np.int64]]:
    """The distinct values in name order, and each row's index among them (-1 for null)."""
    values = column.combine_chunks()
    vocabulary = sorted(pc.unique(values).drop_null().to_pylist())
    return vocabulary, _codes_in(values, vocabulary)


def _codes_in(column: pa.ChunkedArray | pa.Array, vocabulary: list[str]) -> npt.NDArray[np.int64]:
    codes = pc.index_in(column, value_set=pa.array(vocabulary, pa.string()))
    return np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def column_ints(table: pa.Table, name: str) -> npt.NDArray[np.int64]:
    return np.asarray(table.column(name).to_numpy(), dtype=np.int64)


def column_floats(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    return np.asarray(table.column(name).to_numpy(), dtype=np.float64)


def runs_of(column: pa.ChunkedArray) -> dict[str, tuple[int, int]]:
    """Each value's [first, last) rows in a column sorted by it."""
    runs = pc.run_end_encode(column.combine_chunks())
    ends = runs.run_ends.to_pylist()
    starts = [0, *ends[:-1]]
    return dict(zip(runs.values.to_pylist(), zip(starts, ends, strict=True), strict=True))


def _entries(hours: pa.Table, tags: pa.Table, since: int) -> dict[str, EngagementHours]:
    if not hours.num_rows:
        return {}
    contents, content = encode_column(hours.column("content_id"))
    platforms, platform = encode_column(hours.column("platform"))
    # Tag rows always have their hour row (one fold writes both, one snapshot reads both).
    tags = tags.filter(pc.is_in(tags.column("content_id"), value_set=pa.array(contents)))
    tag_names, tag = encode_column(tags.column("tag"))
    tag_content = _codes_in(tags.column("content_id"), contents)
    tag_platform = _codes_in(tags.column("platform"), platforms)
    sample = hours.column("sample").combine_chunks()
    sample_t = np.asarray(
        pc.fill_null(pc.struct_field(sample, "t"), NO_SAMPLE).to_numpy(), dtype=np.int64
    )
    sample_text: list[str | None] = pc.struct_field(sample, "text").to_pylist()
    bucket = column_ints(hours, "bucket")
    events = column_floats(hours, "events")
    total = column_floats(hours, "total")
    latest = column_ints(hours, "latest")
    tag_bucket = column_ints(tags, "bucket")
    tag_n = column_floats(tags, "n")
    tag_rows = runs_of(tags.column("tenant_id")) if tags.num_rows else {}
    entries: dict[str, EngagementHours] = {}
    for tenant, (first, last) in runs_of(hours.column("tenant_id")).items():
        # The tenant's own vocabulary of content ids: bincounts stay as small as it.
        used, local = np.unique(content[first:last], return_inverse=True)
        remap = np.full(len(contents), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        t_first, t_last = tag_rows.get(tenant, (0, 0))
        entries[tenant] = EngagementHours(
            since,
            [contents[i] for i in used.tolist()],
            platforms,
            tag_names,
            local.astype(np.int64),
            platform[first:last],
            bucket[first:last],
            events[first:last],
            total[first:last],
            latest[first:last],
            sample_t[first:last],
            sample_text[first:last],
            remap[tag_content[t_first:t_last]],
            tag_platform[t_first:t_last],
            tag_bucket[t_first:t_last],
            tag[t_first:t_last],
            tag_n[t_first:t_last],
        )
    return entries


def _empty(since: int) -> EngagementHours:
    ints, floats = np.zeros(0, dtype=np.int64), np.zeros(0)
    return EngagementHours(
        since, [], [], [], ints, ints, ints, floats, floats, ints, ints, [],
        ints, ints, ints, ints, floats,
    )  # fmt: skip
