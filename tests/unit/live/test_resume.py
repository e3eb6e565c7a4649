"""Resuming a one-way stream from the last seq a client saw, its outbox, and opening
one, with no server."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from hypemeter.errors import RateLimited
from hypemeter.live.channel import ChannelKey, Replay
from hypemeter.live.model import LiveFilter
from hypemeter.live.outbox import Frame, StreamOutbox
from hypemeter.live.stream_session import StreamSession, parse_last_seq, resume
from hypemeter.live.streams import TOKEN_REVOKED, OpenStreams
from hypemeter.metrics.model import Grain

from .fakes import NOW_US, FakeChannel, FakeHub, caller

KEY = ChannelKey("acme", LiveFilter(influencer_id="inf-1"), "likes", Grain.MINUTE, NOW_US)
MESSAGE = {"filter": {"influencer_id": "inf-1"}, "metrics": "likes"}


def kept(*seqs: int, window_s: float = 300.0, limit: int = 16) -> Replay:
    replay = Replay(window_s, limit)
    for seq in seqs:
        replay.keep(seq, {"n": seq}, now=float(seq))
    return replay


def test_replay_gives_the_updates_after_the_last_seq_when_it_kept_them_all() -> None:
    replay = kept(11, 12, 13)
    assert replay.missed_since(11, 13) == [(12, {"n": 12}), (13, {"n": 13})]
    assert replay.missed_since(10, 13) == [(11, {"n": 11}), (12, {"n": 12}), (13, {"n": 13})]
    assert replay.missed_since(13, 13) == []


@pytest.mark.parametrize("last_seq", [9, 14, 0])
def test_replay_cannot_resume_from_a_seq_it_did_not_keep_or_never_sent(last_seq: int) -> None:
    assert kept(11, 12, 13).missed_since(last_seq, 13) is None


def test_replay_keeps_a_window_and_at_most_its_limit() -> None:
    assert [seq for seq, _, _ in kept(1, 2, 400, window_s=300.0).ring] == [400]
    assert [seq for seq, _, _ in kept(1, 2, 3, 4, limit=2).ring] == [3, 4]
    emptied = kept(1, 2)
    emptied.clear()  # a gap in the change feed: no resume can be exact
    assert emptied.missed_since(1, 2) is None


@pytest.mark.parametrize(
    ("raw", "last_seq"),
    [("42", 42), (" 1795996800000001 ", 1795996800000001), (None, None), ("", None)],
)
def test_the_last_seq_is_plain_digits(raw: str | None, last_seq: int | None) -> None:
    assert parse_last_seq(raw) == last_seq


@pytest.mark.parametrize("raw", ["-1", "4e2", "abc", "\u00b2", "1 2"])
def test_anything_else_as_the_last_seq_starts_afresh(raw: str) -> None:
    assert parse_last_seq(raw) is None


def test_resuming_sends_what_was_missed_or_else_a_snapshot() -> None:
    channel = FakeChannel(KEY, seq=100)
    channel.emit()
    channel.emit()
    assert resume(channel, 101) == [("update", {"totals": {"likes": 102}}, 102)]
    assert resume(channel, 102) == []
    snapshot = ("snapshot", {"filter": {"influencer_id": "inf-1"}, "totals": {"likes": 102}}, 102)
    assert resume(channel, None) == [snapshot]
    assert resume(channel, 50) == [snapshot]  # older than what is kept


def frames(outbox: StreamOutbox) -> list[tuple[int, str, Any]]:
    return [(f.seq, f.kind, msgspec.json.decode(f.data)) for f in outbox.frames]


def test_a_full_stream_outbox_ends_the_stream() -> None:
    outbox = StreamOutbox(limit=2)
    outbox.deliver("snapshot", {"n": 1}, 1)
    outbox.deliver("update", {"n": 2}, 2)
    assert frames(outbox) == [(1, "snapshot", {"n": 1}), (2, "update", {"n": 2})]
    outbox.deliver("update", {"n": 3}, 3)
    assert outbox.closed
    assert frames(outbox) == []
    outbox.deliver("update", {"n": 4}, 4)
    assert frames(outbox) == []


def test_a_revoked_stream_ends_with_an_error_under_the_last_seq_sent() -> None:
    outbox = StreamOutbox(limit=8)
    outbox.deliver("snapshot", {"n": 1}, 41)
    outbox.revoke(TOKEN_REVOKED)
    outbox.revoke("again")  # ended already
    outbox.deliver("update", {"n": 2}, 42)
    assert frames(outbox) == [
        (41, "snapshot", {"n": 1}),
        (41, "error", {"code": "unauthenticated", "message": "stream token revoked"}),
    ]


async def test_a_stream_drains_its_frames_with_heartbeats_when_quiet_then_ends() -> None:
    outbox = StreamOutbox(limit=8)
    outbox.deliver("snapshot", {"n": 1}, 1)
    drain = outbox.drain(heartbeat_s=0)
    first = await anext(drain)
    assert first == Frame(1, "snapshot", b'{"n":1}')
    assert await anext(drain) is None  # nothing queued: a heartbeat
    outbox.revoke("API key revoked")
    error = await anext(drain)
    assert error is not None and (error.seq, error.kind) == (1, "error")
    with pytest.raises(StopAsyncIteration):
        await anext(drain)


async def test_opening_a_stream_resumes_and_leaving_releases_it() -> None:
    hub, streams = FakeHub(), OpenStreams(max_per_key=4)
    channel = await hub.channel(KEY)
    channel.emit()  # 101
    channel.emit()  # 102
    session = await StreamSession.open(hub, streams, caller(), MESSAGE, last_seq=101)
    assert session.channel is channel
    assert channel.links == [session.outbox]
    assert streams.count("k1") == 1
    channel.emit()  # 103 reaches the attached stream
    assert [(seq, kind) for seq, kind, _ in frames(session.outbox)] == [
        (102, "update"),
        (103, "update"),
    ]
    session.outbox.revoke("API key revoked")
    sent = [frame async for frame in session.frames()]
    assert [(f.seq, f.kind) for f in sent if f is not None] == [
        (102, "update"),
        (103, "update"),
        (103, "error"),
    ]
    assert channel.links == []
    assert streams.count("k1") == 0


async def test_a_stream_whose_channel_is_refused_is_not_left_registered() -> None:
    hub, streams = FakeHub(), OpenStreams(max_per_key=4)
    hub.failure = RateLimited("no room", retry_after=5, limit=1, reset_after=5)
    with pytest.raises(RateLimited):
        await StreamSession.open(hub, streams, caller(), MESSAGE, last_seq=None)
    assert streams.count("k1") == 0


async def test_a_key_with_all_its_streams_open_is_refused_before_the_channel() -> None:
    hub, streams = FakeHub(), OpenStreams(max_per_key=1)
    await StreamSession.open(hub, streams, caller(), MESSAGE, last_seq=None)
    with pytest.raises(RateLimited) as refused:
        await StreamSession.open(hub, streams, caller(), MESSAGE, last_seq=None)
    assert refused.value.message == "at most 1 live connections per key (live_max_connections)"
    assert [len(c.links) for c in hub.channels.values()] == [1]
