"""Twitch EventSub over real HTTP: the signed callback verification, poll votes as
readings, refusals (wrong, missing, stale), dead letters and revocation.

Every POST is signed ``sha256=<hex HMAC(secret, message id + timestamp + body)>``
and its timestamp must be at most 10 minutes old. A poll message is one ``votes``
reading per choice, its time the message's; votes are a counter, so a query shows
the readings' increments over the range.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .support import LiveServer
from .webhooks_support import (
    Connector,
    Webhooks,
    encode,
    error_of,
    grown,
    module_server,
    reason,
    rfc3339_ns,
    twitch_signed,
    unique,
)

UNRESOLVED = (
    "influencer_id is required, unless content_id or account_id is registered "
    "(/v1/content, /v1/influencers)"
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from module_server(tmp_path_factory, "twitch")


@pytest.fixture
def acme(srv: LiveServer) -> Iterator[Webhooks]:
    with Webhooks(srv, "acme") as tenant:
        yield tenant


def subscription(kind: str, broadcaster: str, status: str = "enabled") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": kind,
        "version": "1",
        "status": status,
        "cost": 0,
        "condition": {"broadcaster_user_id": broadcaster},
        "transport": {"method": "webhook", "callback": "https://example.com/webhooks/callback"},
        "created_at": rfc3339_ns(3600),
    }


def poll(
    phase: str, broadcaster: str, poll_id: str, votes: list[int | None], **extra: Any
) -> bytes:
    """A ``channel.poll.<phase>`` notification; a ``None`` vote leaves the count out
    (as ``begin`` does)."""
    choices = []
    for number, count in enumerate(votes):
        choice: dict[str, Any] = {"id": f"{poll_id}-{number}", "title": f"Choice {number}"}
        if count is not None:
            choice.update(bits_votes=0, channel_points_votes=0, votes=count)
        choices.append(choice)
    event = {
        "id": poll_id,
        "broadcaster_user_id": broadcaster,
        "broadcaster_user_login": "cool_user",
        "broadcaster_user_name": "Cool_User",
        "title": "Aren't shoes just really hard socks?",
        "choices": choices,
        "status": "completed" if phase == "end" else None,
        "started_at": rfc3339_ns(120),
        **extra,
    }
    kind = f"channel.poll.{phase}"
    event = {k: v for k, v in event.items() if v is not None}
    return encode({"subscription": subscription(kind, broadcaster), "event": event})


def notify(
    acme: Webhooks, connector: Connector, body: bytes, *, seconds_ago: float, **signing: Any
) -> tuple[int, bytes, dict[str, str]]:
    headers = twitch_signed(connector.secret(), body, sent=rfc3339_ns(seconds_ago), **signing)
    answer = acme.deliver(connector, body, headers)
    return answer.status_code, answer.content, headers


def votes(acme: Webhooks, influencer: str, poll_id: str) -> tuple[Any, Any]:
    """The votes of the range for the influencer, and for the poll as a content item."""
    total = acme.totals(influencer, "votes")["votes"]
    response = acme.read.get(
        "/v1/metrics/aggregate", params={"metric": "votes", "group_by": "content", "period": "2h"}
    )
    assert response.status_code == 200, response.text
    # One content key per choice: "<poll id>:<choice id>".
    choices = [r["value"] for r in response.json()["data"] if r["key"].startswith(f"{poll_id}:")]
    return total, sum(choices) if choices else None


def test_there_is_no_get_handshake(acme: Webhooks) -> None:
    connector = acme.connector("twitch")
    answer = acme.handshake(connector, {"challenge": "x"})
    assert (answer.status_code, answer.content) == (405, b"Twitch EventSub has no GET handshake")


def test_the_callback_verification_answers_the_challenge_as_plain_text(acme: Webhooks) -> None:
    connector = acme.connector("twitch")
    challenge = "pogchamp-kappa-360noscope-vohiyo"
    body = encode(
        {"challenge": challenge, "subscription": subscription("channel.poll.progress", "1337")}
    )
    headers = twitch_signed(connector.secret(), body, kind="webhook_callback_verification")
    answer = acme.deliver(connector, body, headers)
    assert (answer.status_code, answer.content) == (200, challenge.encode())
    assert answer.headers["content-type"].startswith("text/plain")

    forged = twitch_signed("not-the-secret", body, kind="webhook_callback_verification")
    refused = acme.deliver(connector, body, forged)
    assert acme.refused(refused, 403) == "Twitch-Eventsub-Message-Signature does not match"
    assert challenge not in refused.text


def test_poll_messages_are_votes_readings_counted_once_per_message(acme: Webhooks) -> None:
    broadcaster, poll_id = unique("1"), unique("poll-")
    influencer = acme.influencer("twitch", broadcaster)
    connector = acme.connector("twitch")
    before = acme.telemetry("deliveries", "twitch")

    # Nobody votes for the first choice: its readings stay 0 throughout.
    begin = poll("begin", broadcaster, poll_id, [None, None])
    assert notify(acme, connector, begin, seconds_ago=40)[:2] == (204, b"")
    assert votes(acme, influencer, poll_id) == (0, 0)
    first = poll("progress", broadcaster, poll_id, [0, 4])
    assert notify(acme, connector, first, seconds_ago=30)[:2] == (204, b"")
    assert votes(acme, influencer, poll_id) == (4, 4)
    second = poll("progress", broadcaster, poll_id, [0, 9])
    status, content, headers = notify(acme, connector, second, seconds_ago=20)
    assert (status, content) == (204, b"")
    assert votes(acme, influencer, poll_id) == (9, 9)

    # Twitch retries a message with the same id: answered, and dropped as a replay.
    again = acme.deliver(connector, second, headers)
    assert (again.status_code, again.content) == (204, b"")
    end = poll("end", broadcaster, poll_id, [0, 9])
    assert notify(acme, connector, end, seconds_ago=10)[:2] == (204, b"")
    assert votes(acme, influencer, poll_id) == (9, 9)

    assert grown(before, acme.telemetry("deliveries", "twitch")) == {"counted": 4, "replay": 1}
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (4, 0, 0)
    assert health["replays"] == 1
    assert acme.dead_letters(connector) == []


def test_the_votes_of_a_poll_are_the_sum_of_its_choices(acme: Webhooks) -> None:
    broadcaster, poll_id = unique("1"), unique("poll-")
    influencer = acme.influencer("twitch", broadcaster)
    connector = acme.connector("twitch")
    progress = poll("progress", broadcaster, poll_id, [12, 7])
    assert notify(acme, connector, progress, seconds_ago=30)[:2] == (204, b"")
    assert votes(acme, influencer, poll_id) == (19, 19)
    later = poll("progress", broadcaster, poll_id, [13, 9])
    assert notify(acme, connector, later, seconds_ago=20)[:2] == (204, b"")
    assert votes(acme, influencer, poll_id) == (22, 22)


def test_wrong_missing_and_stale_signatures_are_refused(acme: Webhooks) -> None:
    broadcaster, poll_id = unique("1"), unique("poll-")
    influencer = acme.influencer("twitch", broadcaster)
    connector = acme.connector("twitch")
    body = poll("progress", broadcaster, poll_id, [0, 5])
    before = acme.telemetry("refused", "twitch")

    wrong = acme.deliver(connector, body, twitch_signed("another-secret", body))
    assert acme.refused(wrong, 403) == "Twitch-Eventsub-Message-Signature does not match"
    signed = twitch_signed(connector.secret(), body)
    moved = {**signed, "Twitch-Eventsub-Message-Timestamp": rfc3339_ns(1)}  # not what was signed
    assert acme.refused(acme.deliver(connector, body, moved), 403) == (
        "Twitch-Eventsub-Message-Signature does not match"
    )
    unsigned = {k: v for k, v in signed.items() if k != "Twitch-Eventsub-Message-Signature"}
    missing = acme.deliver(connector, body, unsigned)
    assert acme.refused(missing, 401) == "missing header Twitch-Eventsub-Message-Signature"
    old = rfc3339_ns(11 * 60)
    stale = acme.deliver(connector, body, twitch_signed(connector.secret(), body, sent=old))
    assert re.fullmatch(
        rf"Twitch-Eventsub-Message-Timestamp is stale \({re.escape(old)}, 66\d s old; "
        r"limit 600 s\)",
        acme.refused(stale, 403),
    )

    assert acme.totals(influencer, "votes") == {"votes": 0}
    refusals = grown(before, acme.telemetry("refused", "twitch"))
    assert refusals == {"mismatch": 2, "missing": 1, "stale": 1}
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (0, 4, 0)
    assert health["last_error"].startswith("refused: Twitch-Eventsub-Message-Timestamp is stale")


def test_unknown_subscriptions_and_broadcasters_are_dead_letters(acme: Webhooks) -> None:
    broadcaster, poll_id = unique("1"), unique("poll-")
    connector = acme.connector("twitch")
    follow = {
        "subscription": subscription("channel.follow", broadcaster),
        "event": {"user_id": "1234", "broadcaster_user_id": broadcaster},
    }
    unknown = encode(follow)
    assert notify(acme, connector, unknown, seconds_ago=30)[:2] == (204, b"")
    body = poll("progress", broadcaster, poll_id, [0, 6])
    status, _, headers = notify(acme, connector, body, seconds_ago=20)
    assert status == 204

    first, second = acme.dead_letters(connector)
    why = "unknown EventSub subscription type 'channel.follow'"
    assert first["reasons"] == [reason(why, unknown.decode())]
    message = headers["Twitch-Eventsub-Message-Id"]
    assert second["reasons"] == [
        f"event tw:poll:{poll_id}:{poll_id}-{n}:{message}: {UNRESOLVED}" for n in (0, 1)
    ]
    assert second["body"] == body.decode()

    influencer = acme.influencer("twitch", broadcaster)
    for replays, counts in ((1, (2, 0)), (2, (0, 2))):
        replay = acme.replayed(second["id"])
        assert (replay["accepted"], replay["duplicates"]) == counts
        state = replay["dead_letter"]
        assert (state["state"], state["replays"]) == ("resolved", replays)
        assert votes(acme, influencer, poll_id) == (6, 6)
    assert [d["id"] for d in acme.dead_letters(connector, state="open")] == [first["id"]]


def test_a_revocation_disables_the_connector(acme: Webhooks) -> None:
    connector = acme.connector("twitch")
    revoked = subscription("channel.poll.progress", unique("1"), "authorization_revoked")
    body = encode({"subscription": revoked})
    headers = twitch_signed(connector.secret(), body, kind="revocation")
    answer = acme.deliver(connector, body, headers)
    assert (answer.status_code, answer.content) == (204, b"")
    (shown,) = [c for c in acme.connectors() if c["id"] == connector.id]
    assert shown["disabled"] == (
        f"Twitch revoked EventSub subscription {revoked['id']} (channel.poll.progress): "
        "status authorization_revoked"
    )


# -- replays, message types and disabled connectors ---------------------------------------


def test_a_replayed_message_is_answered_and_not_processed_again(acme: Webhooks) -> None:
    """Twitch redelivers a message with the same id when unsure it arrived; so may anyone
    who captured one. The process that stored it answers 2xx and drops it: not counted,
    and not a second dead letter. (Deliveries go to one process; see the docs.)"""
    stranger, poll_id = unique("1"), unique("poll-")
    connector = acme.connector("twitch")
    before = acme.telemetry("deliveries", "twitch")
    unknown = poll("progress", stranger, poll_id, [1, 2])  # no influencer: a dead letter
    status, _, headers = notify(acme, connector, unknown, seconds_ago=20)
    assert status == 204
    for _ in range(2):
        again = acme.deliver(connector, unknown, headers)
        assert (again.status_code, again.content) == (204, b"")
    assert len(acme.dead_letters(connector)) == 1

    broadcaster, counted_poll = unique("1"), unique("poll-")
    influencer = acme.influencer("twitch", broadcaster)
    body = poll("progress", broadcaster, counted_poll, [3, 4])
    status, _, headers = notify(acme, connector, body, seconds_ago=10)
    assert status == 204
    assert acme.deliver(connector, body, headers).status_code == 204
    assert votes(acme, influencer, counted_poll) == (7, 7)

    assert grown(before, acme.telemetry("deliveries", "twitch")) == {
        "dead_letter": 1,
        "counted": 1,
        "replay": 3,
    }
    health = acme.health(connector)
    assert (health["deliveries"], health["dead_letters"], health["replays"]) == (2, 1, 3)


def test_only_the_documented_message_types_are_accepted(acme: Webhooks) -> None:
    broadcaster, poll_id = unique("1"), unique("poll-")
    influencer = acme.influencer("twitch", broadcaster)
    connector = acme.connector("twitch")
    body = poll("progress", broadcaster, poll_id, [0, 5])
    for kind in ("keepalive", "notifications", "Notification"):
        signed = twitch_signed(connector.secret(), body, kind=kind)
        answer = acme.deliver(connector, body, signed)
        error = error_of(answer, 400, "invalid_input")
        assert error["field"] == "Twitch-Eventsub-Message-Type"
        assert error["message"] == (
            f"Twitch-Eventsub-Message-Type {kind!r} is not one of notification, "
            "webhook_callback_verification, revocation"
        )
    # The type header is not signed: a captured notification relabelled as a revocation
    # would disable the connector. Its body is no revocation: refused.
    relabelled = twitch_signed(connector.secret(), body, kind="revocation")
    error = error_of(acme.deliver(connector, body, relabelled), 400, "invalid_input")
    assert error["message"] == (
        "the signed body is not a revocation message (Twitch-Eventsub-Message-Type is not signed)"
    )
    (shown,) = [c for c in acme.connectors() if c["id"] == connector.id]
    assert shown["disabled"] is None
    assert acme.dead_letters(connector) == []
    assert acme.totals(influencer, "votes") == {"votes": 0}


def test_a_disabled_connector_refuses_every_delivery(acme: Webhooks) -> None:
    broadcaster, poll_id = unique("1"), unique("poll-")
    influencer = acme.influencer("twitch", broadcaster)
    connector = acme.connector("twitch")
    revoked = encode(
        {"subscription": subscription("channel.poll.progress", broadcaster, "user_removed")}
    )
    headers = twitch_signed(connector.secret(), revoked, kind="revocation")
    assert acme.deliver(connector, revoked, headers).status_code == 204
    before = acme.telemetry("refused", "twitch")

    body = poll("progress", broadcaster, poll_id, [2, 5])
    for kind, message in (("notification", body), ("revocation", revoked)):
        answer = acme.deliver(
            connector, message, twitch_signed(connector.secret(), message, kind=kind)
        )
        error = error_of(answer, 410, "gone")
        assert error["field"] == "connector_id"
        assert error["message"] == (
            f"the twitch connector '{connector.id}' is disabled; it takes no requests"
        )
        assert "user_removed" not in answer.text  # why is for the tenant's admins
    assert acme.totals(influencer, "votes") == {"votes": 0}
    assert acme.dead_letters(connector) == []
    assert grown(before, acme.telemetry("refused", "twitch")) == {"disabled": 2}


def test_a_challenge_is_never_taken_for_html(acme: Webhooks) -> None:
    connector = acme.connector("twitch")
    challenge = "<script>alert(1)</script>"
    body = encode({"challenge": challenge, "subscription": subscription("channel.poll.end", "1")})
    headers = twitch_signed(connector.secret(), body, kind="webhook_callback_verification")
    answer = acme.deliver(connector, body, headers)
    assert (answer.status_code, answer.text) == (200, challenge)
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["x-content-type-options"] == "nosniff"
