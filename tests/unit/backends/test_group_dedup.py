"""Duplicates inside one group commit: the first occurrence of each id wins."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hypemeter.backends.embedded.duckdb_store.commit import _first_occurrences


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=60))
def test_first_occurrences_match_a_plain_scan(pairs: list[tuple[int, int]]) -> None:
    hi = np.array([p[0] for p in pairs], dtype=np.uint64)
    lo = np.array([p[1] for p in pairs], dtype=np.uint64)
    seen: set[tuple[int, int]] = set()
    expected = []
    for position, pair in enumerate(pairs):
        if pair not in seen:
            seen.add(pair)
            expected.append(position)
    assert _first_occurrences(hi, lo).tolist() == expected


def test_distinct_hi_words_take_the_fast_path() -> None:
    hi = np.array([9, 3, 9, 7, 3], dtype=np.uint64)
    lo = np.array([1, 2, 1, 4, 2], dtype=np.uint64)
    assert _first_occurrences(hi, lo).tolist() == [0, 1, 3]
