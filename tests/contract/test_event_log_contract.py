"""EventLog contract, on the ingest journal and on NATS JetStream: appends are durable and
ordered; a read from any sequence gives every later entry once, in order, after a crash too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hypemeter.backends.cluster.nats_log import JetStreamLog, LogConfig
from hypemeter.backends.embedded.duckdb_store import journal
from hypemeter.backends.embedded.duckdb_store.file_log import FileEventLog
from hypemeter.clock import FixedClock
from hypemeter.events.ports import EventLog, LogEntry

from .conftest import NATS_DSN
from .test_event_store_contract import NOW_US, batch, event, ids

Opener = Callable[[], Awaitable[EventLog]]


@pytest.fixture(params=["file", "jetstream"])
async def open_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the log anew each call, on the same files or stream: a restart."""
    opened: list[EventLog] = []
    stream = f"HM_LOG_{uuid.uuid4().hex[:12].upper()}"

    async def opener() -> EventLog:
        log: EventLog
        if request.param == "file":
            log = FileEventLog(tmp_path / "journal", FixedClock(NOW_US))
        else:
            log = JetStreamLog(f"{NATS_DSN}?stream={stream}", LogConfig(partitions=4))
        await log.start()
        opened.append(log)
        return log

    yield opener
    for log in opened:
        await log.aclose()
    if request.param == "jetstream":
        import nats

        nc = await nats.connect(NATS_DSN)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.drain()


def rows(entries: list[LogEntry]) -> list[tuple[str, str]]:
    return [
        (tenant, event_id)
        for entry in entries
        for tenant, event_id in zip(
            entry.table.column("tenant_id").to_pylist(),
            entry.table.column("event_id").to_pylist(),
            strict=True,
        )
    ]


async def read_all(log: EventLog, after: int = 0, *, limit: int = 1000) -> list[LogEntry]:
    found: list[LogEntry] = []
    while True:
        page = await log.read(after, limit=limit)
        if not page:
            return found
        found.extend(page)
        after = page[-1].seq


async def test_appends_return_growing_sequences_and_read_back_in_order(
    open_log: Opener,
) -> None:
    log = await open_log()
    seqs = [await log.append("acme", ids(f"e{n}")) for n in range(5)]
    seqs.append(await log.append("other", batch(event("x", metric="comments", value=3.0))))
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    entries = await read_all(log)
    assert [e.seq for e in entries] == seqs
    assert rows(entries) == [("acme", f"e{n}") for n in range(5)] + [("other", "x")]
    last = entries[-1].table.to_pylist()[0]
    assert (last["metric"], last["value"]) == ("comments", 3.0)


async def test_a_read_from_a_sequence_gives_every_later_entry_once(open_log: Opener) -> None:
    log = await open_log()
    seqs = [await log.append("acme", ids(f"e{n}", f"f{n}")) for n in range(12)]
    middle = seqs[4]
    later = await read_all(log, middle, limit=3)  # pages of three: no gap, no repeat
    assert [e.seq for e in later] == seqs[5:]
    assert rows(later) == [("acme", x) for n in range(5, 12) for x in (f"e{n}", f"f{n}")]
    assert await log.read(seqs[-1]) == []


async def test_entries_survive_a_crash_and_appends_go_on_after_them(open_log: Opener) -> None:
    first = await open_log()
    before = [await first.append("acme", ids(f"e{n}")) for n in range(4)]
    # No close: the process died. A new one opens the same log.
    second = await open_log()
    assert [e.seq for e in await read_all(second)] == before
    after = await second.append("acme", ids("late"))
    assert after > before[-1]
    entries = await read_all(second)
    assert [e.seq for e in entries] == [*before, after]
    assert rows(entries) == [("acme", f"e{n}") for n in range(4)] + [("acme", "late")]


async def test_a_torn_last_write_is_not_an_entry(tmp_path: Path) -> None:
    log = FileEventLog(tmp_path / "journal", FixedClock(NOW_US))
    await log.start()
    kept = await log.append("acme", ids("a"))
    segment, end = log.journal._current, log.journal._offset
    assert segment is not None
    torn = (await log.read(0))[0]
    await log.aclose()
    # The next record was cut short by the crash: its header made it, its payload not.
    with segment.path.open("r+b") as file:
        file.seek(end)
        file.write(journal.HEADER.pack(journal.MAGIC, kept + 1, NOW_US, 1000, 0) + b"x" * 10)
    again = FileEventLog(tmp_path / "journal", FixedClock(NOW_US))
    await again.start()
    try:
        entries = await again.read(0)
        assert [e.seq for e in entries] == [kept]
        assert entries[0].table.equals(torn.table)
        assert await again.append("acme", ids("b")) == kept + 1
    finally:
        await again.aclose()
