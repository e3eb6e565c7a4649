"""The applier's stacking of journaled groups into few tables (one INSERT each)."""

from __future__ import annotations

import pyarrow as pa

from hypemeter.backends.embedded.duckdb_store.applier import Staged, stacked


def _rows(*ids: str) -> pa.Table:
    return pa.table({"event_id": pa.array(list(ids), pa.string())})


def test_groups_of_one_schema_become_one_table_tagged_with_their_seq_and_time() -> None:
    batch = [
        Staged(7, 1_000, _rows("a", "b")),
        Staged(8, 2_000, _rows()),
        Staged(9, 3_000, _rows("c")),
    ]
    [table] = stacked(batch)
    assert table.column("event_id").to_pylist() == ["a", "b", "c"]
    assert table.column("seq").to_pylist() == [7, 7, 9]
    assert table.column("ingested_us").to_pylist() == [1_000, 1_000, 3_000]


def test_a_group_of_another_schema_starts_a_new_table_and_order_is_kept() -> None:
    other = pa.table({"event_id": pa.array(["x"], pa.string()), "extra": pa.array([1])})
    batch = [Staged(1, 10, _rows("a")), Staged(2, 20, other), Staged(3, 30, _rows("b"))]
    tables = stacked(batch)
    assert [t.column("event_id").to_pylist() for t in tables] == [["a"], ["x"], ["b"]]
    assert [t.column("seq").to_pylist() for t in tables] == [[1], [2], [3]]


def test_groups_without_rows_stack_into_nothing() -> None:
    assert stacked([Staged(1, 10, _rows()), Staged(2, 20, _rows())]) == []
