"""The commit logic both stores share: group layout, snapshot folding, per-append answers."""

from __future__ import annotations

import numpy as np

from hypemeter.backends.commit_group import (
    fold_readings,
    group_table,
    kept_readings,
    per_append,
    with_deltas,
)
from hypemeter.events.batch import EventBatch
from hypemeter.events.model import EventIn, Reading, from_epoch_us, to_epoch_us

NOW_US = 1_795_183_200_000_000
MINUTE_US = 60_000_000


def batch(*events: EventIn) -> EventBatch:
    return EventBatch.from_events(list(events), [to_epoch_us(e.ts) for e in events if e.ts])


def event(
    event_id: str, value: float = 1.0, *, kind: str = "delta", minutes_ago: int = 1
) -> EventIn:
    return EventIn(
        event_id=event_id,
        influencer_id="inf-1",
        platform="instagram",
        metric="followers" if kind == "snapshot" else "likes",
        kind=kind,
        value=value,
        ts=from_epoch_us(NOW_US - minutes_ago * MINUTE_US),
    )


def test_a_group_is_one_table_with_each_rows_tenant_in_front() -> None:
    table, sizes = group_table(
        [("acme", batch(event("a"), event("b"))), ("other", batch(event("c")))]
    )
    assert sizes == [2, 1]
    assert table.column_names[0] == "tenant_id"
    assert table.column("tenant_id").to_pylist() == ["acme", "acme", "other"]
    assert table.column("event_id").to_pylist() == ["a", "b", "c"]


def test_readings_of_one_series_fold_in_order_and_an_older_one_changes_nothing() -> None:
    key = ("acme", "inf-1", "instagram", "", "followers")
    other = ("acme", "inf-2", "instagram", "", "followers")
    stored = {key: Reading(NOW_US - 10 * MINUTE_US, 100.0)}
    readings = [
        Reading(NOW_US - 5 * MINUTE_US, 120.0),
        Reading(NOW_US - 20 * MINUTE_US, 50.0),  # older than the last one seen
        Reading(NOW_US - 2 * MINUTE_US, 110.0),  # lower: an unfollow
        Reading(NOW_US - 1 * MINUTE_US, 7.0),
    ]
    deltas, state = fold_readings([key, key, key, other], readings, stored.get)
    assert deltas == [20.0, 0.0, -10.0, 7.0]
    assert state == {key: readings[2], other: readings[3]}


def test_kept_rows_carry_deltas_and_each_append_gets_its_own_slice() -> None:
    table, sizes = group_table(
        [
            ("acme", batch(event("a"), event("s1", 40.0, kind="snapshot", minutes_ago=3))),
            ("acme", batch(event("a"), event("s2", 55.0, kind="snapshot"), event("b", 2.0))),
        ]
    )
    keep = np.array([True, True, False, True, True])  # the second "a" is a duplicate
    rows, keys, readings = kept_readings(table, keep)
    assert rows.tolist() == [1, 3]
    assert keys == [("acme", "inf-1", "instagram", "", "followers")] * 2
    deltas, _ = fold_readings(keys, readings, lambda key: None)
    kept = with_deltas(table, keep, rows, deltas)
    assert kept.column("event_id").to_pylist() == ["a", "s1", "s2", "b"]
    assert kept.column("delta").to_pylist() == [1.0, 40.0, 15.0, 2.0]
    first, second = per_append(keep, sizes, kept, 9, 123)
    assert (first.accepted, first.duplicates, second.accepted, second.duplicates) == (2, 0, 2, 1)
    assert first.changes is not None and second.changes is not None
    assert first.changes.column("event_id").to_pylist() == ["a", "s1"]
    assert second.changes.column("event_id").to_pylist() == ["s2", "b"]
    assert (second.seq, second.committed_us) == (9, 123)
