"""The query caches' windows equal a brute-force sum over the raw events."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from hypemeter.metrics.engagement_window import EngagementRows, EngagementWindow, TagRows
from hypemeter.metrics.model import DAY_US, HOUR_US, MINUTE_US, Grain
from hypemeter.metrics.queries import CounterQuery, Filters, TrendingQuery
from hypemeter.metrics.sums import NO_SAMPLE, Block, BucketLog, Vocabulary, reduced
from hypemeter.metrics.windows import (
    Column,
    CounterRows,
    CounterWindow,
)

T0 = 1_700_000_000_000_000 // DAY_US * DAY_US
SINCE = T0
END = T0 + 3 * DAY_US
METRICS = ("likes", "comments", "views", "shares")
ENGAGED = ("likes", "comments", "shares")


@dataclass(frozen=True)
class Ev:
    tenant: str
    influencer: str
    platform: str
    campaign: str | None
    content: str | None
    metric: str
    delta: float
    ts: int
    text: str | None
    tags: tuple[str, ...]


def events(seed: int, n: int = 600) -> list[Ev]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ts = rng.randrange(SINCE - 2 * HOUR_US, END)
        out.append(
            Ev(
                rng.choice(("t1", "t2")),
                rng.choice(("i1", "i2", "i3")),
                rng.choice(("x", "youtube", "tiktok")),
                rng.choice((None, "c1", "c2")),
                rng.choice((None, "p1", "p2", "p3", "p4", "p5")),
                rng.choice(METRICS),
                float(rng.choice((1, 2, 5, -1, 0.5))),
                # A few events share a microsecond, so sample ties are exercised.
                ts - ts % (MINUTE_US if rng.random() < 0.2 else 1),
                rng.choice((None, "nice", "wow", "meh")),
                tuple(rng.sample(("a", "b", "c", "d"), rng.randrange(3))),
            )
        )
    return out


def col(values: Sequence[str | None]) -> Column:
    distinct = sorted(set(values), key=lambda v: (v is not None, v or ""))
    return Column(distinct, np.array([distinct.index(v) for v in values], dtype=np.int64))


def fill(counters: CounterWindow, engagement: EngagementWindow, batch: list[Ev]) -> None:
    """Add ``batch`` as a change set's rows are added."""
    if not batch:
        return
    hour = np.array([e.ts - e.ts % HOUR_US for e in batch], dtype=np.int64)
    counters.add(
        CounterRows(
            col([e.tenant for e in batch]),
            col([e.influencer for e in batch]),
            col([e.platform for e in batch]),
            col([e.campaign for e in batch]),
            col([e.metric for e in batch]),
            hour,
            np.array([e.delta for e in batch]),
            np.ones(len(batch)),
        )
    )
    engaged = [e for e in batch if e.metric in ENGAGED and e.content is not None]
    if not engaged:
        return
    engagement.add(
        EngagementRows(
            col([e.tenant for e in engaged]),
            col([e.content for e in engaged]),
            col([e.platform for e in engaged]),
            np.array([e.ts - e.ts % HOUR_US for e in engaged], dtype=np.int64),
            np.array([e.delta for e in engaged]),
            np.ones(len(engaged)),
            np.array([e.ts for e in engaged], dtype=np.int64),
            np.array([e.ts if e.text else NO_SAMPLE for e in engaged], dtype=np.int64),
            np.array([e.text for e in engaged], dtype=object),
        )
    )
    tagged = [(e, t) for e in engaged for t in e.tags]
    if tagged:
        engagement.add_tags(
            TagRows(
                col([e.tenant for e, _ in tagged]),
                col([e.content for e, _ in tagged]),
                col([e.platform for e, _ in tagged]),
                col([t for _, t in tagged]),
                np.array([e.ts - e.ts % HOUR_US for e, _ in tagged], dtype=np.int64),
                np.ones(len(tagged)),
            )
        )


def windows(all_events: list[Ev], seed: int) -> tuple[CounterWindow, EngagementWindow]:
    """A load of some events (in one piece), then the rest in shuffled change sets."""
    rng = random.Random(seed)
    shuffled = list(all_events)
    rng.shuffle(shuffled)  # late and out-of-order events
    cut = rng.randrange(len(shuffled))
    counters, engagement = CounterWindow(SINCE), EngagementWindow(SINCE)
    fill(counters, engagement, shuffled[:cut])
    rest = shuffled[cut:]
    while rest:
        size = rng.randrange(1, 40)
        fill(counters, engagement, rest[:size])
        rest = rest[size:]
    return counters, engagement


def brute_counters(evs: list[Ev], tenant: str, q: CounterQuery) -> dict[tuple, tuple[float, int]]:
    out: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    f = q.filters
    for e in evs:
        values = {"influencer_id": e.influencer, "platform": e.platform, "campaign_id": e.campaign}
        if e.tenant != tenant or e.metric not in q.metrics or not q.start_us <= e.ts < q.end_us:
            continue
        if any(
            want is not None and values[name] != want
            for name, want in (
                ("influencer_id", f.influencer_id),
                ("platform", f.platform),
                ("campaign_id", f.campaign_id),
            )
        ):
            continue
        if any(values[d] is None for d in q.by):
            continue
        bucket = None if q.grain is None else e.ts - e.ts % q.grain.us
        acc = out[(tuple(values[d] for d in q.by), bucket, e.metric)]
        acc[0] += e.delta
        acc[1] += 1
    return {k: (v[0], int(v[1])) for k, v in out.items()}


def answered(window: CounterWindow, tenant: str, q: CounterQuery) -> dict[tuple, tuple[float, int]]:
    answer = window.counters(tenant, q)
    assert answer is not None
    return {(r.key, r.bucket, r.metric): (r.total, r.events) for r in answer.rows}


def same(a: dict[tuple, tuple[float, int]], b: dict[tuple, tuple[float, int]]) -> None:
    assert a.keys() == b.keys()
    for key, (total, n) in a.items():
        assert math.isclose(total, b[key][0], abs_tol=1e-9), key
        assert n == b[key][1], key


QUERIES = [
    CounterQuery(SINCE, END, METRICS),
    CounterQuery(SINCE + HOUR_US, END - 5 * HOUR_US, ("likes", "views"), grain=Grain.HOUR),
    CounterQuery(SINCE, END, METRICS, by=("platform",), grain=Grain.DAY),
    CounterQuery(SINCE, END, ("likes",), by=("campaign_id", "influencer_id")),
    CounterQuery(SINCE, END, METRICS, Filters(influencer_id="i2"), grain=Grain.HOUR),
    CounterQuery(SINCE, END, METRICS, Filters(influencer_id="i1", platform="x"), by=("platform",)),
    CounterQuery(SINCE, END, ("comments", "nope"), Filters(campaign_id="c1"), by=("platform",)),
    CounterQuery(SINCE, END, METRICS, Filters(influencer_id="nobody")),
    CounterQuery(SINCE, END, METRICS, Filters(platform="unknown")),
]


@pytest.mark.parametrize("seed", range(6))
def test_counters_equal_brute_force(seed: int) -> None:
    evs = events(seed)
    counters, _ = windows(evs, seed)
    for tenant in ("t1", "t2", "t3"):
        for q in QUERIES:
            same(answered(counters, tenant, q), brute_counters(evs, tenant, q))


@pytest.mark.parametrize("seed", range(4))
def test_matrix_equals_the_bucketed_sums(seed: int) -> None:
    evs = events(seed)
    counters, _ = windows(evs, seed)
    q = CounterQuery(SINCE + 2 * HOUR_US, END, ("likes", "views"), Filters("i3"), grain=Grain.HOUR)
    matrix = counters.matrix("t1", q)
    assert matrix is not None
    assert matrix.origin_us == q.start_us and matrix.grain_us == HOUR_US
    expected = brute_counters(evs, "t1", q)
    for metric in q.metrics:
        values = matrix.values[metric]
        assert len(values) == (END - q.start_us) // HOUR_US
        for i, value in enumerate(values.tolist()):
            want = expected.get(((), q.start_us + i * HOUR_US, metric), (0.0, 0))[0]
            assert math.isclose(value, want, abs_tol=1e-9)


def test_what_the_window_does_not_hold_is_left_to_the_store() -> None:
    counters, engagement = windows(events(1), 1)
    inside = SINCE + HOUR_US
    assert counters.counters("t1", CounterQuery(inside + 1, END, METRICS)) is None
    assert counters.counters("t1", CounterQuery(SINCE - HOUR_US, END, METRICS)) is None
    assert counters.counters("t1", CounterQuery(inside, END, METRICS, grain=Grain.MINUTE)) is None
    assert counters.counters("t1", CounterQuery(inside, END, METRICS, by=("content_id",))) is None
    content = CounterQuery(inside, END, METRICS, Filters(content_id="p1"))
    assert counters.counters("t1", content) is None
    assert counters.matrix("t1", CounterQuery(inside, END, METRICS, by=("platform",))) is None
    ragged = TrendingQuery(inside + MINUTE_US, END, None, 0, None, 10)
    assert engagement.trending("t1", ragged) is None


def brute_trending(evs: list[Ev], tenant: str, q: TrendingQuery) -> list[tuple]:
    items: dict[str, dict] = {}
    for e in evs:
        if e.tenant != tenant or e.metric not in ENGAGED or e.content is None:
            continue
        if not q.start_us <= e.ts < q.end_us or (q.platform and e.platform != q.platform):
            continue
        item = items.setdefault(
            e.content, {"n": 0, "total": 0.0, "latest": 0, "sample": None, "tags": {}}
        )
        item["n"] += 1
        item["total"] += e.delta
        item["latest"] = max(item["latest"], e.ts)
        if e.text is not None and (item["sample"] is None or (e.ts, e.text) > item["sample"]):
            item["sample"] = (e.ts, e.text)
        for tag in e.tags:
            item["tags"][tag] = item["tags"].get(tag, 0) + 1
    rows = [
        (
            c,
            v["n"],
            v["total"],
            v["latest"],
            v["sample"][1] if v["sample"] else None,
            tuple(sorted(v["tags"], key=lambda t: (-v["tags"][t], t))[:3]),
        )
        for c, v in items.items()
        if v["n"] >= q.min_interactions
    ]
    rows.sort(key=lambda r: (-round(r[2], 9), r[0]))
    if q.after is not None:
        total, after = q.after
        rows = [r for r in rows if r[2] < total or (r[2] == total and r[0] > after)]
    return rows[: q.limit]


@pytest.mark.parametrize("seed", range(6))
def test_trending_equals_brute_force(seed: int) -> None:
    evs = events(seed, 900)
    _, engagement = windows(evs, seed)
    for q in (
        TrendingQuery(SINCE, END, None, 0, None, 10),
        TrendingQuery(SINCE + 5 * HOUR_US, END - HOUR_US, "x", 3, None, 2),
        TrendingQuery(SINCE, END, None, 1, (4.0, "p2"), 3),
        TrendingQuery(SINCE, END, "nowhere", 0, None, 3),
    ):
        for tenant in ("t1", "t2"):
            answer = engagement.trending(tenant, q)
            assert answer is not None
            got = [
                (r.content_id, r.interactions, r.engagement, r.latest_us, r.sample_text, r.tags)
                for r in answer.rows
            ]
            expected = brute_trending(evs, tenant, q)
            assert [g[0] for g in got] == [w[0] for w in expected]
            for g, w in zip(got, expected, strict=True):
                assert g[1] == w[1] and g[3:] == w[3:]
                assert math.isclose(g[2], w[2], abs_tol=1e-9)


def test_a_log_merges_blocks_and_drops_old_buckets() -> None:
    log = BucketLog(since_us=10)
    for i in range(64):
        owner = np.array([i % 3], dtype=np.int32)
        log.add(Block({"owner": owner}, np.array([i % 4 * 10]), {"n": np.array([1.0])}, {}))
    assert len(log) == 9  # 3 owners x buckets 10, 20, 30: rows of bucket 0 are not held
    rows = log.rows(10, 40, owner=1)
    assert rows is not None
    assert sorted(zip(rows.bucket.tolist(), rows.sums["n"].tolist(), strict=True)) == [
        (10, 6.0),  # i = 1, 13, 25, 37, 49, 61
        (20, 5.0),
        (30, 5.0),
    ]
    log.advance(30)
    log.add(Block({"owner": np.array([0], dtype=np.int32)}, np.array([30]), {"n": np.ones(1)}, {}))
    later = log.rows(0, 40)
    assert later is not None and set(later.bucket.tolist()) >= {30}


def test_blocks_merged_elsewhere_replace_the_ones_they_were_made_of() -> None:
    log = BucketLog(since_us=0)
    for i in range(5):  # blocks of falling size are not merged in passing
        rows = 4 ** (4 - i)  # 256, 64, 16, 4, 1
        block = Block(
            {"owner": np.zeros(rows, dtype=np.int32)},
            np.arange(rows, dtype=np.int64),
            {"n": np.ones(rows)},
            {},
        )
        log.add(block)
    old = log.compactable(2)
    assert old is not None and len(old) == 3  # the newest two may change meanwhile
    later = Block({"owner": np.zeros(1, dtype=np.int32)}, np.array([0]), {"n": np.ones(1)}, {})
    log.add(later)
    version = log.version
    assert log.compacted(old, reduced(Block.concat(old), 0))
    assert log.version == version + 1 and log.compactable(1) is None  # 3 blocks left
    assert not log.compacted(old, reduced(Block.concat(old), 0))  # already replaced
    rows = log.rows(0, 300)
    assert rows is not None
    sums: dict[int, float] = defaultdict(float)
    for bucket, n in zip(rows.bucket.tolist(), rows.sums["n"].tolist(), strict=True):
        sums[bucket] += n
    assert sums[0] == 6.0 and sums[1] == 4.0 and sums[255] == 1.0 and len(sums) == 256


def test_vocabulary_ranks_names() -> None:
    vocabulary = Vocabulary()
    codes = vocabulary.encode(["b", "a", None, "c", "a"]).tolist()
    assert codes == [1, 2, 0, 3, 2]
    assert vocabulary.ranks().tolist() == [0, 2, 1, 3]
    assert vocabulary.rank_after("a") == 2 and vocabulary.rank_after("bb") == 3
    assert vocabulary.code("zz") == -1
