"""The single writer thread: group commit, queue accounting and shedding."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from hypemeter.backends.embedded.duckdb_store.writer import Append, WriterThread
from hypemeter.errors import Overloaded, StoreUnavailable

GUARD_SECONDS = 10  # only to turn a hang into a failure


class FakeCommit:
    """A commit step that records its groups and can be held before it returns."""

    def __init__(self) -> None:
        self.groups: list[list[Any]] = []
        self.before_ack = threading.Event()
        self.before_ack.set()
        self.failure: Exception | None = None

    def __call__(self, con: duckdb.DuckDBPyConnection, jobs: list[Append]) -> list[Any]:
        self.groups.append([job.batch for job in jobs])
        assert self.before_ack.wait(GUARD_SECONDS)
        if self.failure is not None:
            raise self.failure
        return [f"committed {job.batch}" for job in jobs]


@pytest.fixture
def commit() -> FakeCommit:
    return FakeCommit()


@pytest.fixture
def writer(commit: FakeCommit) -> Iterator[WriterThread]:
    thread = WriterThread(
        lambda: duckdb.connect(":memory:"), commit, queue_limit=3, commit_max_events=100
    )
    thread.start()
    yield thread
    commit.before_ack.set()
    thread.stop()


async def test_append_returns_what_the_commit_acknowledged(writer: WriterThread) -> None:
    async with asyncio.timeout(GUARD_SECONDS):
        assert await writer.append("acme", "b1", 2) == "committed b1"
        assert await writer.call(lambda con: con.execute("SELECT 41 + 1").fetchall()) == [(42,)]
    assert writer.pending_events == 0


async def test_appends_queued_during_a_commit_are_committed_together(
    writer: WriterThread, commit: FakeCommit
) -> None:
    release = threading.Event()
    blocker = asyncio.ensure_future(writer.call(lambda con: release.wait(GUARD_SECONDS)))
    appends = [asyncio.ensure_future(writer.append("acme", name, 1)) for name in "abc"]
    await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(GUARD_SECONDS):
        assert await blocker is True
        assert await asyncio.gather(*appends) == ["committed a", "committed b", "committed c"]
    assert commit.groups == [["a", "b", "c"]]


async def test_append_beyond_the_queue_limit_is_shed(
    writer: WriterThread, commit: FakeCommit
) -> None:
    commit.before_ack.clear()
    first = asyncio.ensure_future(writer.append("acme", "first", 2))
    await asyncio.sleep(0)
    assert writer.pending_events == 2
    with pytest.raises(Overloaded) as caught:
        await writer.append("acme", "second", 2)
    assert caught.value.retry_after == 1
    assert "2 events waiting; ingest_queue_events is 3" in caught.value.message
    assert writer.pending_events == 2
    commit.before_ack.set()
    async with asyncio.timeout(GUARD_SECONDS):
        assert await first == "committed first"
    assert commit.groups == [["first"]]


async def test_oversize_batch_is_taken_when_the_queue_is_empty(writer: WriterThread) -> None:
    async with asyncio.timeout(GUARD_SECONDS):
        assert await writer.append("acme", "big", 50) == "committed big"


async def test_failed_commit_fails_every_request_of_the_group(
    writer: WriterThread, commit: FakeCommit
) -> None:
    commit.failure = RuntimeError("disk full")
    release = threading.Event()
    blocker = asyncio.ensure_future(writer.call(lambda con: release.wait(GUARD_SECONDS)))
    appends = [asyncio.ensure_future(writer.append("acme", name, 1)) for name in "ab"]
    await asyncio.sleep(0)
    release.set()
    async with asyncio.timeout(GUARD_SECONDS):
        await blocker
        outcomes = await asyncio.gather(*appends, return_exceptions=True)
        assert await writer.call(lambda con: "still serving") == "still serving"
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert all("disk full" in str(o) for o in outcomes)
    assert writer.pending_events == 0


async def test_failing_call_raises_in_the_caller(writer: WriterThread) -> None:
    with pytest.raises(duckdb.Error):
        await writer.call(lambda con: con.execute("SELECT * FROM no_such_table"))
    assert await writer.call(lambda con: "alive") == "alive"


async def test_acknowledged_events_no_longer_count_as_queued(writer: WriterThread) -> None:
    async with asyncio.timeout(GUARD_SECONDS):
        assert await writer.append("acme", "b1", 2) == "committed b1"
        depth = writer.pending_events
        follow_up = await asyncio.gather(writer.append("acme", "b2", 2), return_exceptions=True)
    assert (depth, follow_up) == (0, ["committed b2"])
