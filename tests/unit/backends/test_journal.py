"""The ingest journal: records come back whole and in order, torn tails and reused
segments included."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from hypemeter.backends.embedded.duckdb_store.journal import Journal


def rows(seq: int, count: int = 3) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"e-{seq}-{n}" for n in range(count)],
            "value": [float(seq * 10 + n) for n in range(count)],
            "tags": [["a", str(seq)]] * count,
        }
    )


def reopened(directory: Path, after: int, **options: int) -> list[tuple[int, int, pa.Table]]:
    journal = Journal(directory, **options)
    journal.open()
    found = [(r.seq, r.now_us, r.rows) for r in journal.replay(after)]
    journal.close()
    return found


def test_replay_returns_every_record_above_the_seq_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.replay(0)
    for seq in range(1, 6):
        journal.append(seq, 1000 + seq, rows(seq))
    journal.close()

    found = reopened(tmp_path, 2)
    assert [(seq, now) for seq, now, _ in found] == [(3, 1003), (4, 1004), (5, 1005)]
    for seq, _, table in found:
        assert table.equals(rows(seq))


def test_a_torn_last_record_ends_the_replay(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.replay(0)
    journal.append(1, 1, rows(1))
    journal.append(2, 2, rows(2))
    journal.close()
    (segment,) = tmp_path.glob("*.journal")
    data = bytearray(segment.read_bytes())
    # Cut the second record short as a crash during its write would: its tail is zeros.
    first_end = data.index(b"HMJ1", 4)
    data[first_end + 40 :] = bytes(len(data) - first_end - 40)
    segment.write_bytes(bytes(data))

    assert [seq for seq, _, _ in reopened(tmp_path, 0)] == [1]


def test_segments_rotate_and_released_ones_are_reused(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=4096)
    journal.open()
    journal.replay(0)
    for seq in range(1, 21):
        journal.append(seq, seq, rows(seq, 8))
    made = len(list(tmp_path.glob("*.journal")))
    assert made > 2  # each record is over 1 KB: several segments

    journal.release(20)  # DuckDB holds all of them now
    for seq in range(21, 41):
        journal.append(seq, seq, rows(seq, 8))
    # The released segments were written again; no new file was needed beyond one more.
    assert len(list(tmp_path.glob("*.journal"))) <= made + 1
    journal.close()

    # Older records left in a reused segment are at or below DuckDB's seq: skipped.
    found = reopened(tmp_path, 20, segment_bytes=4096)
    assert [seq for seq, _, _ in found] == list(range(21, 41))
    assert all(table.equals(rows(seq, 8)) for seq, _, table in found)


def test_a_record_larger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=1024)
    journal.open()
    journal.replay(0)
    journal.append(1, 1, rows(1, 500))
    journal.append(2, 2, rows(2, 1))
    journal.close()
    assert [seq for seq, _, _ in reopened(tmp_path, 0)] == [1, 2]


def test_purge_removes_every_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.replay(0)
    journal.append(1, 1, rows(1))
    journal.prepare()
    journal.purge()
    journal.close()
    assert list(tmp_path.glob("*.journal")) == []
    assert reopened(tmp_path, 0) == []


def test_reusing_segments_leaves_no_file_open_but_the_current_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=4096)
    journal.open()
    journal.replay(0)
    fds = Path("/proc/self/fd")
    before = len(list(fds.iterdir()))
    for seq in range(1, 61):
        journal.append(seq, seq, rows(seq, 8))
        journal.release(seq - 1)
    assert len(list(fds.iterdir())) <= before + 1
    journal.close()
