"""The rules of a live session that sends ops, with no server: the outbox and what a
lagging client gets, the limits and their error texts, heartbeats, and leaving."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from hypemeter.live.config import LiveConfig
from hypemeter.live.model import iso
from hypemeter.live.outbox import CLOSE_LAGGING, CLOSE_POLICY, LAGGING_REASON
from hypemeter.live.session import FLOODING_REASON, Session
from hypemeter.live.throttle import Throttle

from .fakes import NOW_US, FakeHub, caller

SUBSCRIBE_A = {"op": "subscribe", "id": "a", "filter": {"influencer_id": "inf-1"}}


def session_of(hub: FakeHub, *, rate: str = "1000/hour") -> Session:
    ops = Throttle(rate, what="messages", setting="live_ops_rate")
    return Session.open(hub, caller(), ops, now=100.0)


def drain(session: Session) -> list[dict[str, Any]]:
    """What the transport would write now, decoded; the client catches up."""
    written = []
    while (message := session.outbox.take()) is not None:
        written.append(msgspec.json.decode(message))
        session.written(now=100.0)
    return written


async def test_messages_are_numbered_in_the_order_they_are_queued() -> None:
    hub = FakeHub()
    session = session_of(hub)
    await session.handle(SUBSCRIBE_A)
    await session.handle({"op": "ping"})
    channel = next(iter(hub.channels.values()))
    channel.emit()
    assert drain(session) == [
        {
            "type": "snapshot",
            "id": "a",
            "filter": {"influencer_id": "inf-1"},
            "totals": {"likes": 100},
            "seq": 1,
        },
        {"type": "pong", "ts": iso(NOW_US), "seq": 2},
        {"type": "update", "id": "a", "totals": {"likes": 101}, "seq": 3},
    ]


async def test_a_full_outbox_drops_what_is_unread_says_so_and_sends_fresh_snapshots() -> None:
    hub = FakeHub(LiveConfig(queue_messages=3, max_lags=3))
    session = session_of(hub)
    await session.handle(SUBSCRIBE_A)  # seq 1
    channel = next(iter(hub.channels.values()))
    channel.emit()  # seq 2
    channel.emit()  # seq 3: the outbox is full
    channel.emit()  # the client lags: this update and the three unread are dropped
    assert session.outbox.lags == 1
    assert not session.done
    assert drain(session) == [
        {"type": "lagged", "dropped": 3, "seq": 4},
        {
            "type": "snapshot",
            "id": "a",
            "filter": {"influencer_id": "inf-1"},
            "totals": {"likes": 103},
            "seq": 5,
        },
    ]


async def test_a_client_that_lags_max_lags_times_without_catching_up_is_closed() -> None:
    hub = FakeHub(LiveConfig(queue_messages=2, max_lags=2))
    session = session_of(hub)
    await session.handle(SUBSCRIBE_A)
    channel = next(iter(hub.channels.values()))
    for _ in range(2):
        channel.emit()  # the first lag: lagged + a snapshot fill the outbox again
    assert session.outbox.lags == 1
    channel.emit()  # the second lag, with no message written in between
    assert session.done
    assert (session.outbox.close_code, session.outbox.close_reason) == (
        CLOSE_LAGGING,
        LAGGING_REASON,
    )
    assert session.outbox.messages == type(session.outbox.messages)()
    session.send({"type": "pong"})  # a closed session queues nothing more
    assert session.outbox.take() is None


async def test_catching_up_forgives_the_lags_before() -> None:
    hub = FakeHub(LiveConfig(queue_messages=2, max_lags=2))
    session = session_of(hub)
    await session.handle(SUBSCRIBE_A)
    channel = next(iter(hub.channels.values()))
    channel.emit()
    channel.emit()  # lag 1
    assert [m["type"] for m in drain(session)] == ["lagged", "snapshot"]
    assert session.outbox.lags == 0
    channel.emit()
    channel.emit()
    channel.emit()  # a lag again, but the first since catching up: not closed
    assert not session.done
    assert session.outbox.lags == 1
    assert [m["type"] for m in drain(session)] == ["lagged", "snapshot"]


async def test_subscriptions_and_tails_per_connection_are_capped() -> None:
    hub = FakeHub(LiveConfig(max_subscriptions=2))
    session = session_of(hub)
    await session.handle(SUBSCRIBE_A)
    await session.handle({"op": "tail", "id": "b", "filter": {"content_id": "post-1"}})
    await session.handle({**SUBSCRIBE_A, "id": "c"})
    refused = drain(session)[-1]
    assert refused == {
        "type": "error",
        "code": "rate_limited",
        "message": "at most 2 subscriptions and tails per connection (live_max_subscriptions)",
        "id": "c",
        "seq": 3,
    }
    await session.handle({"op": "unsubscribe", "id": "b"})
    await session.handle({**SUBSCRIBE_A, "id": "c"})
    assert [(m["type"], m["id"]) for m in drain(session)] == [
        ("unsubscribed", "b"),
        ("snapshot", "c"),
    ]
    assert sorted(session.subs) == ["a", "c"]
    assert hub.tails == []


async def test_ids_are_checked_and_unique_per_connection() -> None:
    session = session_of(FakeHub())
    await session.handle(SUBSCRIBE_A)
    await session.handle(SUBSCRIBE_A)
    await session.handle({**SUBSCRIBE_A, "id": ""})
    await session.handle({"op": "unsubscribe", "id": "zz"})
    errors = [(m["message"], m["field"]) for m in drain(session) if m["type"] == "error"]
    assert errors == [
        ("id 'a' is already in use on this connection", "id"),
        ("id must be a string of 1 to 128 characters", "id"),
        ("no subscription 'zz' on this connection", "id"),
    ]


async def test_ops_over_the_rate_are_refused_and_a_flooding_client_is_closed() -> None:
    hub = FakeHub(LiveConfig(max_refused_ops=2))
    session = session_of(hub, rate="2/hour")
    await session.receive(b'{"op": "ping"}')
    await session.receive(b'{"op": "ping"}')
    await session.receive(b'{"op": "ping"}')  # over the rate: refused, strike one
    assert [m["type"] for m in drain(session)] == ["pong", "pong", "error"]
    assert session.strikes.count == 1
    await session.receive(b'{"op": "ping"}')  # strike two: the client keeps flooding
    assert session.done
    assert (session.outbox.close_code, session.outbox.close_reason) == (
        CLOSE_POLICY,
        FLOODING_REASON,
    )


async def test_an_op_over_the_rate_is_answered_with_the_limit() -> None:
    session = session_of(FakeHub(), rate="1/hour")
    await session.receive(b'{"op": "ping"}')
    await session.receive(b'{"op": "ping"}')
    assert drain(session)[-1] == {
        "type": "error",
        "code": "rate_limited",
        "message": "at most 1 messages per 3600 s (live_ops_rate)",
        "seq": 2,
    }


@pytest.mark.parametrize(
    ("data", "message", "field"),
    [
        (b"x" * (64 * 1024 + 1), "messages are limited to 65536 bytes", None),
        (b"[1, 2]", "a message is a JSON object with an op", "op"),
        (b'{"op": "dance"}', "op must be subscribe, unsubscribe, tail or ping", "op"),
    ],
)
async def test_bad_messages_are_answered_with_errors(
    data: bytes, message: str, field: str | None
) -> None:
    session = session_of(FakeHub())
    await session.receive(data)
    (error,) = drain(session)
    assert (error["code"], error["message"], error.get("field")) == (
        "invalid_input",
        message,
        field,
    )
    assert not session.done


async def test_text_that_is_not_json_is_answered_with_an_error() -> None:
    session = session_of(FakeHub())
    await session.receive("{nope")
    (error,) = drain(session)
    assert error["code"] == "invalid_input"
    assert error["message"].startswith("not JSON: ")


def test_heartbeats_come_after_quiet_spells_only() -> None:
    hub = FakeHub(LiveConfig(heartbeat_s=15.0))
    session = session_of(hub)  # the last write at 100.0
    assert session.heartbeat(now=110.0) == 5.0
    assert session.outbox.take() is None
    assert session.heartbeat(now=115.0) == 0.0  # due: queued, and a new spell starts
    assert msgspec.json.decode(session.outbox.take() or "") == {
        "type": "heartbeat",
        "ts": iso(NOW_US),
        "seq": 1,
    }
    assert session.heartbeat(now=115.0) == 15.0
    session.send({"type": "pong"})  # queued, unwritten: the writer waits on the client
    assert session.heartbeat(now=130.0) == 0.0
    assert [m["type"] for m in drain(session)] == ["pong"]


async def test_revoking_closes_with_a_policy_violation_and_release_leaves_everything() -> None:
    hub = FakeHub()
    session = session_of(hub)
    await session.handle(SUBSCRIBE_A)
    await session.handle({"op": "tail", "id": "t", "filter": {"influencer_id": "inf-1"}})
    session.revoke("API key revoked")
    session.revoke("stream token revoked")  # the first close wins
    assert (session.outbox.close_code, session.outbox.close_reason) == (
        CLOSE_POLICY,
        "API key revoked",
    )
    session.release()
    assert [c.links for c in hub.channels.values()] == [[]]
    assert hub.tails == []
    assert (session.subs, session.tails) == ({}, {})


async def test_a_tail_sends_one_message_per_commit_with_its_events() -> None:
    hub = FakeHub()
    session = session_of(hub)
    await session.handle({"op": "tail", "id": "t", "filter": {"influencer_id": "inf-1"}})
    (_, target) = hub.tails[0]
    row = {
        "event_id": "e1",
        "influencer_id": "inf-1",
        "platform": "instagram",
        "content_id": "post-1",
        "campaign_id": None,
        "metric": "likes",
        "kind": "delta",
        "value": 1.0,
        "delta": 1.0,
        "ts": NOW_US,
        "user_id": "u1",
        "text": None,
        "tags": None,
    }
    target.take([row, {**row, "event_id": "e2", "influencer_id": "inf-2"}], 7, NOW_US)
    tailing, event = drain(session)
    assert tailing == {"type": "tailing", "id": "t", "filter": {"influencer_id": "inf-1"}, "seq": 1}
    assert event["type"] == "event"
    assert [e["event_id"] for e in event["events"]] == ["e1"]
    assert event["events"][0]["ts"] == iso(NOW_US)
    assert event["events"][0]["tags"] == []
