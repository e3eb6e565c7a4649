"""Twitch EventSub: signed id + timestamp + body, freshness, challenge, revocation, polls."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from hypemeter.connectors.webhooks import ADAPTERS, MappedEvent, WebhookMalformed, WebhookRefused
from hypemeter.connectors.webhooks.payload import rfc3339_us

FIXTURES = Path(__file__).parent / "fixtures"
PROGRESS = (FIXTURES / "twitch_eventsub_poll_progress.json").read_bytes()
SECRETS = {"eventsub_secret": "test-eventsub-secret"}
NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
SENT = "2026-11-20T13:59:30.123456789Z"
SENT_US = 1_795_183_170_123_456
MESSAGE_ID = "befa7b53-d79d-478f-86b9-120f112b044e"
TWITCH = ADAPTERS["twitch"]


def signed(
    body: bytes,
    kind: str = "notification",
    *,
    message_id: str = MESSAGE_ID,
    sent: str = SENT,
    secret: str = SECRETS["eventsub_secret"],
) -> dict[str, str]:
    digest = hmac.new(secret.encode(), (message_id + sent).encode() + body, hashlib.sha256)
    return {
        "twitch-eventsub-message-id": message_id,
        "twitch-eventsub-message-timestamp": sent,
        "twitch-eventsub-message-signature": "sha256=" + digest.hexdigest(),
        "twitch-eventsub-message-type": kind,
    }


def test_there_is_no_get_handshake() -> None:
    assert TWITCH.answer_get({}, SECRETS, now_us=NOW_US).status == 405


def test_callback_verification_answers_the_challenge_as_plain_text() -> None:
    body = json.dumps(
        {"challenge": "pogchamp-kappa-360noscope-vohiyo", "subscription": {"id": "s1"}}
    ).encode()
    receipt = TWITCH.receive(
        signed(body, "webhook_callback_verification"), body, SECRETS, now_us=NOW_US
    )
    assert receipt.reply.status == 200
    assert receipt.reply.body == b"pogchamp-kappa-360noscope-vohiyo"
    assert receipt.reply.media_type == "text/plain"


def test_revocation_disables_with_the_subscription_status() -> None:
    subscription = {
        "id": "f1c2",
        "type": "channel.poll.progress",
        "status": "authorization_revoked",
    }
    body = json.dumps({"subscription": subscription}).encode()
    receipt = TWITCH.receive(signed(body, "revocation"), body, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 204
    assert receipt.disable == (
        "Twitch revoked EventSub subscription f1c2 (channel.poll.progress): "
        "status authorization_revoked"
    )


def test_poll_progress_is_one_votes_snapshot_per_choice() -> None:
    receipt = TWITCH.receive(signed(PROGRESS), PROGRESS, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 204
    poll = "Aren't shoes just really hard socks?"
    assert receipt.events == (
        MappedEvent(
            event_id=f"tw:poll:1243456:123:{MESSAGE_ID}",
            metric="votes",
            value=12.0,
            kind="snapshot",
            ts_us=SENT_US,
            account_id="1337",
            content_id="1243456:123",
            properties={
                "poll_id": "1243456",
                "choice_id": "123",
                "phase": "progress",
                "choice": "Yeah!",
                "poll": poll,
            },
        ),
        MappedEvent(
            event_id=f"tw:poll:1243456:124:{MESSAGE_ID}",
            metric="votes",
            value=7.0,
            kind="snapshot",
            ts_us=SENT_US,
            account_id="1337",
            content_id="1243456:124",
            properties={
                "poll_id": "1243456",
                "choice_id": "124",
                "phase": "progress",
                "choice": "No!",
                "poll": poll,
            },
        ),
    )
    assert receipt.unmapped == ()


def test_a_redelivery_dedupes_and_a_later_message_is_a_new_reading() -> None:
    first = TWITCH.receive(signed(PROGRESS), PROGRESS, SECRETS, now_us=NOW_US)
    again = TWITCH.receive(signed(PROGRESS), PROGRESS, SECRETS, now_us=NOW_US + 1_000_000)
    assert [e.event_id for e in first.events] == [e.event_id for e in again.events]
    later = TWITCH.receive(signed(PROGRESS, message_id="m-2"), PROGRESS, SECRETS, now_us=NOW_US)
    assert not {e.event_id for e in first.events} & {e.event_id for e in later.events}


def test_poll_begin_reads_zero_and_poll_end_carries_its_status() -> None:
    payload = json.loads(PROGRESS)
    payload["subscription"]["type"] = "channel.poll.begin"
    for choice in payload["event"]["choices"]:
        del choice["votes"], choice["bits_votes"], choice["channel_points_votes"]
    begin = json.dumps(payload).encode()
    receipt = TWITCH.receive(signed(begin), begin, SECRETS, now_us=NOW_US)
    assert [e.value for e in receipt.events] == [0.0, 0.0]
    payload = json.loads(PROGRESS)
    payload["subscription"]["type"] = "channel.poll.end"
    payload["event"]["status"] = "completed"
    end = json.dumps(payload).encode()
    receipt = TWITCH.receive(signed(end), end, SECRETS, now_us=NOW_US)
    assert [(e.value, (e.properties or {}).get("status")) for e in receipt.events] == [
        (12.0, "completed"),
        (7.0, "completed"),
    ]


def test_an_unknown_subscription_type_goes_to_dead_letters() -> None:
    payload = json.loads(PROGRESS)
    payload["subscription"]["type"] = "channel.raid"
    body = json.dumps(payload).encode()
    receipt = TWITCH.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.events == ()
    assert [u.reason for u in receipt.unmapped] == [
        "unknown EventSub subscription type 'channel.raid'"
    ]


def test_wrong_and_missing_signatures_are_refused() -> None:
    with pytest.raises(WebhookRefused) as wrong:
        TWITCH.receive(signed(PROGRESS, secret="other"), PROGRESS, SECRETS, now_us=NOW_US)
    assert (wrong.value.status, wrong.value.reason) == (
        403,
        "Twitch-Eventsub-Message-Signature does not match",
    )
    headers = signed(PROGRESS)
    headers["twitch-eventsub-message-id"] = "replayed-under-another-id"
    with pytest.raises(WebhookRefused):
        TWITCH.receive(headers, PROGRESS, SECRETS, now_us=NOW_US)
    headers = signed(PROGRESS)
    del headers["twitch-eventsub-message-signature"]
    with pytest.raises(WebhookRefused) as missing:
        TWITCH.receive(headers, PROGRESS, SECRETS, now_us=NOW_US)
    assert (missing.value.status, missing.value.reason) == (
        401,
        "missing header Twitch-Eventsub-Message-Signature",
    )


def test_a_timestamp_older_than_ten_minutes_is_refused() -> None:
    sent = "2026-11-20T13:49:59Z"
    with pytest.raises(WebhookRefused) as stale:
        TWITCH.receive(signed(PROGRESS, sent=sent), PROGRESS, SECRETS, now_us=NOW_US)
    assert stale.value.status == 403
    assert stale.value.reason == (
        f"Twitch-Eventsub-Message-Timestamp is stale ({sent}, 601 s old; limit 600 s)"
    )
    fresh = TWITCH.receive(
        signed(PROGRESS, sent="2026-11-20T13:50:00Z"), PROGRESS, SECRETS, now_us=NOW_US
    )
    assert len(fresh.events) == 2


def test_rfc3339_times_with_nanoseconds_and_offsets() -> None:
    assert rfc3339_us(SENT) == SENT_US
    assert rfc3339_us("2026-11-20T15:59:30.123456+02:00") == SENT_US
    assert rfc3339_us("2026-11-20T13:59:30") is None
    assert rfc3339_us("yesterday") is None


# -- what the signature covers: the id, the timestamp and the body, not the type ----------


def test_each_receipt_names_its_message_for_replay_detection() -> None:
    receipt = TWITCH.receive(signed(PROGRESS), PROGRESS, SECRETS, now_us=NOW_US)
    assert receipt.message_id == f"twitch:{MESSAGE_ID}"
    other = TWITCH.receive(signed(PROGRESS, message_id="m-2"), PROGRESS, SECRETS, now_us=NOW_US)
    assert other.message_id == "twitch:m-2"


@pytest.mark.parametrize("kind", ["notifications", "", "NOTIFICATION", "keepalive"])
def test_a_message_type_twitch_does_not_document_is_refused(kind: str) -> None:
    headers = signed(PROGRESS, kind)
    if not kind:
        headers["twitch-eventsub-message-type"] = " "
    with pytest.raises(WebhookMalformed) as refused:
        TWITCH.receive(headers, PROGRESS, SECRETS, now_us=NOW_US)
    assert refused.value.field == "Twitch-Eventsub-Message-Type"
    assert "is not one of notification, webhook_callback_verification, revocation" in (
        refused.value.reason
    )


def test_a_signed_notification_relabelled_as_a_revocation_disables_nothing() -> None:
    with pytest.raises(WebhookMalformed) as refused:
        TWITCH.receive(signed(PROGRESS, "revocation"), PROGRESS, SECRETS, now_us=NOW_US)
    assert refused.value.reason == (
        "the signed body is not a revocation message (Twitch-Eventsub-Message-Type is not signed)"
    )


def test_bodies_must_be_of_the_kind_their_type_names() -> None:
    challenge = json.dumps({"challenge": "c", "subscription": {"id": "s1"}}).encode()
    enabled = json.dumps({"subscription": {"id": "s1", "status": "enabled"}}).encode()
    for body, kind in (
        (challenge, "notification"),
        (challenge, "revocation"),
        (PROGRESS, "webhook_callback_verification"),
        (enabled, "revocation"),
        (enabled, "notification"),
    ):
        with pytest.raises(WebhookMalformed, match=f"not a {kind} message"):
            TWITCH.receive(signed(body, kind), body, SECRETS, now_us=NOW_US)
