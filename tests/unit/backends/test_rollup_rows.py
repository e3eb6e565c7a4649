"""The rollup rows a PostgreSQL commit groups in memory equal the SQL grouping's rows,
written here as a plain scan over the events (rollup_sql.py states the rules)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from hypemeter.backends.cluster.postgres_commit import array_literals
from hypemeter.backends.cluster.postgres_schema import ROLLUP_KEYS
from hypemeter.backends.cluster.rollup_rows import fold
from hypemeter.metrics.model import DAY_US, ENGAGEMENT, HOUR_US, MINUTE_US

BASE_US = 1_795_183_200_000_000
_TEXT = st.sampled_from(["great", "great!", "meh", "Zed", "", 'say "hi"'])

event_rows = st.fixed_dictionaries(
    {
        "tenant_id": st.sampled_from(["acme", "other"]),
        "influencer_id": st.sampled_from(["ana", "bo", "Cy"]),
        "platform": st.sampled_from(["x", "tiktok"]),
        "content_id": st.none() | st.sampled_from(["c1", "c2", "c10"]),
        "campaign_id": st.none() | st.sampled_from(["", "spring"]),
        "metric": st.sampled_from(["likes", "comments", "views", "followers"]),
        "delta": st.integers(-50, 1000).map(float) | st.sampled_from([0.5, -2.25]),
        # Some before 1970: SQL's integer division truncates toward zero.
        "ts_us": st.sampled_from([BASE_US, -BASE_US // 1000]).flatmap(
            lambda base: st.integers(base - 2 * DAY_US, base + 2 * DAY_US)
        ),
        "text": st.none() | _TEXT,
        "tags": st.none() | st.lists(st.sampled_from(["a", "b", "b,c"]), max_size=3),
    }
)


def table(rows: list[dict[str, Any]]) -> pa.Table:
    types = {"delta": pa.float64(), "ts_us": pa.int64(), "tags": pa.list_(pa.string())}
    columns = [
        "tenant_id",
        "influencer_id",
        "platform",
        "content_id",
        "campaign_id",
        "metric",
        "delta",
        "ts_us",
        "text",
        "tags",
    ]
    return pa.table({c: pa.array([r[c] for r in rows], types.get(c, pa.string())) for c in columns})


def bucket(ts_us: int, width: int) -> int:
    """SQL's ``(ts_us / width) * width``: integer division truncating toward zero."""
    return (ts_us // width) * width if ts_us >= 0 else -((-ts_us) // width) * width


def brute_force(rows: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    sums: dict[str, dict[tuple[Any, ...], list[Any]]] = defaultdict(dict)

    def add(table: str, key: tuple[Any, ...], delta: float) -> None:
        entry = sums[table].setdefault(key, [0.0, 0])
        entry[0] += delta
        entry[1] += 1

    samples: dict[tuple[Any, ...], list[Any]] = {}
    tags: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in rows:
        campaign = r["campaign_id"] or ""
        ts, hour = r["ts_us"], bucket(r["ts_us"], HOUR_US)
        for name, width in (
            ("rollup_minute", MINUTE_US),
            ("rollup_hour", HOUR_US),
            ("rollup_day", DAY_US),
        ):
            key = (r["tenant_id"], r["influencer_id"], r["metric"], bucket(ts, width))
            add(name, (*key, r["platform"], campaign), r["delta"])
        add(
            "rollup_tenant_hour",
            (r["tenant_id"], r["metric"], hour, r["platform"], campaign),
            r["delta"],
        )
        if r["content_id"] is None:
            continue
        add(
            "rollup_content_hour",
            (
                r["tenant_id"],
                r["content_id"],
                r["metric"],
                hour,
                r["influencer_id"],
                r["platform"],
                campaign,
            ),
            r["delta"],
        )
        if r["metric"] not in ENGAGEMENT:
            continue
        key = (r["tenant_id"], hour, r["content_id"], r["platform"])
        sample = samples.setdefault(key, [0.0, 0, ts, None, None])
        sample[0] += r["delta"]
        sample[1] += 1
        sample[2] = max(sample[2], ts)
        if r["text"] is not None and (
            sample[3] is None or (ts, r["text"].encode()) > (sample[3], sample[4].encode())
        ):
            sample[3], sample[4] = ts, r["text"]
        for tag in r["tags"] or []:
            tags[(*key, tag)] += 1
    out = {name: sorted((*k, v[0], v[1]) for k, v in found.items()) for name, found in sums.items()}
    out["rollup_engagement_hour"] = sorted((*k, *v) for k, v in samples.items())
    out["rollup_engagement_tags_hour"] = sorted((*k, n) for k, n in tags.items())
    return {name: rows for name, rows in out.items() if rows}


def as_rows(found: pa.Table) -> list[tuple[Any, ...]]:
    return [tuple(row.values()) for row in found.to_pylist()]


def byte_order(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(rows, key=lambda row: tuple(v.encode() if isinstance(v, str) else v for v in row))


@settings(max_examples=150, deadline=None)
@given(st.lists(event_rows, min_size=1, max_size=40))
def test_fold_equals_the_sql_grouping(rows: list[dict[str, Any]]) -> None:
    found = fold(table(rows))
    expected = brute_force(rows)
    assert sorted(found) == sorted(expected)
    for name, grouped in found.items():
        got = as_rows(grouped)
        keys = len(ROLLUP_KEYS[name])
        # Key order is byte order, the "C" collation's: concurrent commits lock alike.
        assert [row[:keys] for row in got] == [row[:keys] for row in byte_order(got)]
        assert byte_order(got) == byte_order(expected[name])


def test_fold_of_a_known_batch() -> None:
    hour = BASE_US - BASE_US % HOUR_US
    rows = [
        {"tenant_id": "acme", "influencer_id": "ana", "platform": "x", "content_id": "c1",
         "campaign_id": None, "metric": "comments", "delta": 1.0, "ts_us": hour + 5,
         "text": "first", "tags": ["a", "a"]},
        {"tenant_id": "acme", "influencer_id": "ana", "platform": "x", "content_id": "c1",
         "campaign_id": "", "metric": "comments", "delta": 1.0, "ts_us": hour + 9,
         "text": "later", "tags": None},
        {"tenant_id": "acme", "influencer_id": "ana", "platform": "x", "content_id": "c1",
         "campaign_id": None, "metric": "likes", "delta": 3.0, "ts_us": hour + 60_000_000,
         "text": None, "tags": []},
    ]  # fmt: skip
    found = fold(table(rows))
    assert as_rows(found["rollup_engagement_hour"]) == [
        ("acme", hour, "c1", "x", 5.0, 3, hour + 60_000_000, hour + 9, "later")
    ]
    assert as_rows(found["rollup_engagement_tags_hour"]) == [("acme", hour, "c1", "x", "a", 2)]
    assert as_rows(found["rollup_tenant_hour"]) == [
        ("acme", "comments", hour, "x", "", 2.0, 2),
        ("acme", "likes", hour, "x", "", 3.0, 1),
    ]
    assert as_rows(found["rollup_minute"]) == [
        ("acme", "ana", "comments", hour, "x", "", 2.0, 2),
        ("acme", "ana", "likes", hour + 60_000_000, "x", "", 3.0, 1),
    ]


def test_array_literals_quote_every_element() -> None:
    lists = pa.array(
        [["a", 'b"c', "d\\e", "f,g", "{h}", ""], None, [], ["x"]], pa.list_(pa.string())
    )
    assert array_literals(lists).to_pylist() == [
        '{"a","b\\"c","d\\\\e","f,g","{h}",""}',
        None,
        "{}",
        '{"x"}',
    ]
    assert array_literals(lists.slice(2)).to_pylist() == ["{}", '{"x"}']
