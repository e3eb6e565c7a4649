"""The dedup index: exact membership over a sliding window with bounded memory."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hypemeter.backends.embedded.fingerprints import (
    GENERATIONS_PER_WINDOW,
    MAX_RUNS,
    FingerprintIndex,
    Fingerprints,
)
from hypemeter.events.batch import fingerprint

HOUR_US = 3600 * 1_000_000
WINDOW_US = 24 * HOUR_US
T0 = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z


def fps(tenant: str, ids: list[str]) -> Fingerprints:
    return Fingerprints.of([fingerprint(tenant, event_id) for event_id in ids])


def raw(pairs: list[tuple[int, int]]) -> Fingerprints:
    """Fingerprints with chosen (hi, lo) halves, to force equal high words."""
    hi = np.array([p[0] for p in pairs], dtype=np.uint64)
    lo = np.array([p[1] for p in pairs], dtype=np.uint64)
    return Fingerprints(hi, lo)


def random_ids(rng: random.Random, n: int) -> list[str]:
    return [f"ev-{rng.getrandbits(64):016x}" for _ in range(n)]


def run_files(spill: Path) -> list[Path]:
    return sorted(spill.glob("run-*.npy"))


def new_index(tmp_path: Path, *, memory_entries: int = 1000) -> FingerprintIndex:
    return FingerprintIndex(
        window_us=WINDOW_US, memory_entries=memory_entries, spill_dir=tmp_path / "spill"
    )


def test_fingerprint_depends_on_tenant_and_id() -> None:
    assert fingerprint("acme", "e1") == fingerprint("acme", "e1")
    assert len(fingerprint("acme", "e1")) == 16
    assert fingerprint("acme", "e1") != fingerprint("other", "e1")
    assert fingerprint("acme", "e1") != fingerprint("acme", "e2")


def test_fingerprint_shapes_agree() -> None:
    digests = [fingerprint("t", f"e{i}") for i in range(5)]
    both = Fingerprints.of(digests)
    for n, digest in enumerate(digests):
        value = int.from_bytes(digest, "little")
        assert int(both.hi[n]) == value >> 64
        assert int(both.lo[n]) == value & (2**64 - 1)
    taken = both.take([3, 1])
    assert taken.lo.tolist() == [both.lo[3], both.lo[1]]
    assert taken.hi.tolist() == [both.hi[3], both.hi[1]]


def test_seen_only_after_add(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    batch = fps("acme", ["a", "b"])
    assert index.seen(batch).tolist() == [False, False]
    index.add(batch, T0)
    assert index.seen(fps("acme", ["b", "c", "a"])).tolist() == [True, False, True]
    assert index.seen(fps("other", ["a", "b"])).tolist() == [False, False]
    assert len(index) == 2


def test_empty_queries_and_adds(tmp_path: Path) -> None:
    index = new_index(tmp_path)
    index.add(Fingerprints.of([]), T0)
    assert len(index) == 0
    assert index.seen(Fingerprints.of([])).tolist() == []


def test_exact_across_memory_and_frozen_runs(tmp_path: Path) -> None:
    rng = random.Random(20261120)
    index = new_index(tmp_path, memory_entries=1000)
    added: list[str] = []
    for step in range(30):
        batch = random_ids(rng, rng.randint(1, 700))
        index.add(fps("acme", batch), T0 + step)
        added += batch
    assert index.run_count >= 5
    assert index.memory_entries > 0
    assert len(run_files(tmp_path / "spill")) == index.run_count
    assert len(index) == len(added)
    assert index.seen(fps("acme", added)).all()
    strangers = random_ids(rng, 20_000)
    assert not index.seen(fps("acme", strangers)).any()
    assert not index.seen(fps("other", added)).any()


def test_equal_high_words_are_told_apart(tmp_path: Path) -> None:
    index = new_index(tmp_path, memory_entries=1)
    index.add(raw([(5, 10), (5, 30), (5, 20), (7, 1)]), T0)
    assert index.run_count == 1
    assert index.memory_entries == 0
    probe = raw([(5, 20), (5, 25), (5, 10), (7, 1), (7, 2), (6, 10), (5, 30)])
    assert index.seen(probe).tolist() == [True, False, True, True, False, False, True]


def test_equal_high_words_are_told_apart_in_memory(tmp_path: Path) -> None:
    index = new_index(tmp_path, memory_entries=10**6)
    index.add(raw([(5, 10), (5, 30), (5, 20), (7, 1)]), T0)
    assert (index.run_count, index.memory_entries) == (0, 4)
    probe = raw([(5, 20), (5, 25), (5, 10), (7, 1), (7, 2), (6, 10), (5, 30)])
    assert index.seen(probe).tolist() == [True, False, True, True, False, False, True]


def test_memory_entries_never_exceed_the_bound(tmp_path: Path) -> None:
    rng = random.Random(7)
    index = new_index(tmp_path, memory_entries=1000)
    for step in range(40):
        index.add(fps("acme", random_ids(rng, rng.randint(1, 2500))), T0 + step)
        assert index.memory_entries < 1000
    assert index.run_count > 0


def test_old_generation_is_frozen_even_below_the_bound(tmp_path: Path) -> None:
    index = new_index(tmp_path, memory_entries=10**6)
    index.add(fps("acme", ["a"]), T0)
    assert (index.memory_entries, index.run_count) == (1, 0)
    index.add(fps("acme", ["b"]), T0 + WINDOW_US // GENERATIONS_PER_WINDOW)
    assert (index.memory_entries, index.run_count) == (0, 1)
    assert index.seen(fps("acme", ["a", "b"])).tolist() == [True, True]


def test_runs_older_than_the_window_are_forgotten_and_deleted(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    index = new_index(tmp_path, memory_entries=1)
    index.add(fps("acme", ["old"]), T0)
    index.add(fps("acme", ["recent"]), T0 + HOUR_US)
    assert index.run_count == 2
    assert len(run_files(spill)) == 2
    index.expire(T0 + WINDOW_US)
    assert index.seen(fps("acme", ["old", "recent"])).tolist() == [True, True]
    index.expire(T0 + WINDOW_US + 1)
    assert index.seen(fps("acme", ["old", "recent"])).tolist() == [False, True]
    assert index.run_count == 1
    assert len(run_files(spill)) == 1
    index.add(fps("acme", ["new"]), T0 + HOUR_US + WINDOW_US + 1)
    assert index.seen(fps("acme", ["old", "recent", "new"])).tolist() == [False, False, True]
    assert len(run_files(spill)) == 1


def test_merging_beyond_max_runs_keeps_membership(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    index = new_index(tmp_path, memory_entries=1)
    ids = [f"e{i}" for i in range(MAX_RUNS * 2 + 5)]
    for step, event_id in enumerate(ids):
        index.add(fps("acme", [event_id]), T0 + step)
        assert index.run_count <= MAX_RUNS
    assert index.run_count == MAX_RUNS
    assert len(run_files(spill)) == MAX_RUNS
    assert len(index) == len(ids)
    assert index.seen(fps("acme", ids)).all()
    assert not index.seen(fps("acme", [f"x{i}" for i in range(500)])).any()


def test_merged_run_lives_as_long_as_its_newest_member(tmp_path: Path) -> None:
    index = new_index(tmp_path, memory_entries=1)
    ids = [f"e{i}" for i in range(MAX_RUNS + 1)]
    for step, event_id in enumerate(ids):
        index.add(fps("acme", [event_id]), T0 + step * 1000)
    # e0 and e1 now share one run whose newest member was added at T0 + 1000.
    index.expire(T0 + WINDOW_US + 500)
    assert index.seen(fps("acme", ["e0", "e1"])).tolist() == [True, True]
    index.expire(T0 + WINDOW_US + 1001)
    assert index.seen(fps("acme", ["e0", "e1", "e2"])).tolist() == [False, False, True]


def test_new_index_clears_stale_runs_and_close_deletes_its_own(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    (spill / "run-1-0.npy").write_bytes(b"stale")
    index = new_index(tmp_path, memory_entries=1)
    assert run_files(spill) == []
    index.add(fps("acme", ["a"]), T0)
    assert len(run_files(spill)) == 1
    index.close()
    assert run_files(spill) == []
    assert len(index) == 0


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(
        st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3)), max_size=20), max_size=12
    ),
    probes=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3)), max_size=40),
    memory_entries=st.integers(1, 40),
)
def test_membership_equals_a_plain_set(
    chunks: list[list[tuple[int, int]]], probes: list[tuple[int, int]], memory_entries: int
) -> None:
    """Runs merge, spill and hold many equal hi words: membership is still exact."""
    with tempfile.TemporaryDirectory() as spill:
        index = FingerprintIndex(
            window_us=WINDOW_US, memory_entries=memory_entries, spill_dir=Path(spill)
        )
        added: set[tuple[int, int]] = set()
        for step, chunk in enumerate(chunks):
            index.add(raw(chunk), T0 + step)
            added.update(chunk)
        assert index.memory_entries < memory_entries
        assert index.seen(raw(probes)).tolist() == [p in added for p in probes]
        index.close()
