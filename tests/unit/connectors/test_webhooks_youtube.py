"""YouTube WebSub: challenge echo, X-Hub-Signature (sha1) and Atom entries as new content."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from pathlib import Path

import pytest

from hypemeter.connectors.webhooks import ADAPTERS, NewContent, WebhookMalformed, WebhookRefused
from hypemeter.connectors.webhooks.youtube import intends, topic_for
from hypemeter.events.model import to_epoch_us

FIXTURES = Path(__file__).parent / "fixtures"
NOTIFICATION = (FIXTURES / "youtube_websub_notification.xml").read_bytes()
SECRETS = {"hub_secret": "test-hub-secret"}
NOW_US = 1_795_183_200_000_000  # 2026-11-20T14:00:00Z
YOUTUBE = ADAPTERS["youtube"]

DELETED = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns:at="http://purl.org/atompub/tombstones/1.0" xmlns="http://www.w3.org/2005/Atom">
  <at:deleted-entry ref="yt:video:dQw4w9WgXcQ" when="2026-11-20T15:00:00+00:00">
    <link href="https://www.youtube.com/watch?v=dQw4w9WgXcQ"/>
    <at:by><name>Channel name</name></at:by>
  </at:deleted-entry>
</feed>"""


def signed(body: bytes, secret: str = SECRETS["hub_secret"]) -> dict[str, str]:
    return {"x-hub-signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()}


def test_handshake_echoes_exactly_the_challenge() -> None:
    for mode in ("subscribe", "unsubscribe"):
        query = {
            "hub.mode": mode,
            "hub.topic": "https://www.youtube.com/xml/feeds/videos.xml?channel_id=UCabc",
            "hub.challenge": "14829406516389226542",
            "hub.lease_seconds": "432000",
        }
        reply = YOUTUBE.answer_get(query, SECRETS, now_us=NOW_US)
        assert (reply.status, reply.body) == (200, b"14829406516389226542")
    assert YOUTUBE.answer_get({"hub.mode": "subscribe"}, SECRETS, now_us=NOW_US).status == 404
    assert YOUTUBE.answer_get({}, SECRETS, now_us=NOW_US).status == 404


def test_a_signed_notification_announces_the_video() -> None:
    receipt = YOUTUBE.receive(signed(NOTIFICATION), NOTIFICATION, SECRETS, now_us=NOW_US)
    published = to_epoch_us(dt.datetime(2026, 11, 20, 14, 30, tzinfo=dt.UTC))
    assert receipt.reply.status == 200
    assert receipt.content == (
        NewContent(
            content_id="dQw4w9WgXcQ",
            account_id="UCabcdefghijklmnopqrstuv",
            url="https://www.youtube.com/watch?v=dQw4w9WgXcQ",
            published_us=published,
            type="video",
        ),
    )
    assert receipt.events == () and receipt.unmapped == () and receipt.ignored is None


def test_the_same_notification_twice_announces_the_same_video() -> None:
    first = YOUTUBE.receive(signed(NOTIFICATION), NOTIFICATION, SECRETS, now_us=NOW_US)
    again = YOUTUBE.receive(signed(NOTIFICATION), NOTIFICATION, SECRETS, now_us=NOW_US + 60)
    assert first.content == again.content


def test_a_bad_or_missing_signature_is_acknowledged_and_ignored() -> None:
    wrong = YOUTUBE.receive(signed(NOTIFICATION, "other"), NOTIFICATION, SECRETS, now_us=NOW_US)
    assert (wrong.reply.status, wrong.ignored) == (200, "X-Hub-Signature does not match")
    assert wrong.content == ()
    missing = YOUTUBE.receive({}, NOTIFICATION, SECRETS, now_us=NOW_US)
    assert (missing.reply.status, missing.ignored) == (200, "missing header X-Hub-Signature")
    assert missing.content == ()
    relabelled = signed(NOTIFICATION)["x-hub-signature"].replace("sha1=", "sha256=")
    receipt = YOUTUBE.receive({"x-hub-signature": relabelled}, NOTIFICATION, SECRETS, now_us=NOW_US)
    assert receipt.ignored == "X-Hub-Signature does not match"
    md5 = YOUTUBE.receive({"x-hub-signature": "md5=00"}, NOTIFICATION, SECRETS, now_us=NOW_US)
    assert md5.ignored == "X-Hub-Signature method 'md5' unsupported"


def test_a_hub_may_sign_with_sha256() -> None:
    digest = hmac.new(b"test-hub-secret", NOTIFICATION, hashlib.sha256).hexdigest()
    headers = {"x-hub-signature": f"sha256={digest}"}
    receipt = YOUTUBE.receive(headers, NOTIFICATION, SECRETS, now_us=NOW_US)
    assert [c.content_id for c in receipt.content] == ["dQw4w9WgXcQ"]


def test_an_unconfigured_secret_refuses() -> None:
    with pytest.raises(WebhookRefused) as refused:
        YOUTUBE.receive(signed(NOTIFICATION), NOTIFICATION, {}, now_us=NOW_US)
    assert refused.value.status == 403


def test_a_deleted_entry_is_ignored_not_dead_lettered() -> None:
    receipt = YOUTUBE.receive(signed(DELETED), DELETED, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 200
    assert receipt.ignored == "deleted-entry only: yt:video:dQw4w9WgXcQ"
    assert receipt.content == () and receipt.unmapped == ()


def test_an_entry_without_a_video_id_goes_to_dead_letters() -> None:
    body = NOTIFICATION.replace(b"<yt:videoId>dQw4w9WgXcQ</yt:videoId>", b"").replace(
        b"<id>yt:video:dQw4w9WgXcQ</id>", b"<id>urn:other</id>"
    )
    receipt = YOUTUBE.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.content == ()
    assert [u.reason for u in receipt.unmapped] == ["WebSub entry without a yt:videoId"]
    assert "urn:other" in receipt.unmapped[0].payload


def test_the_atom_id_names_the_video_when_yt_video_id_is_absent() -> None:
    body = NOTIFICATION.replace(b"<yt:videoId>dQw4w9WgXcQ</yt:videoId>", b"")
    receipt = YOUTUBE.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [c.content_id for c in receipt.content] == ["dQw4w9WgXcQ"]


@pytest.mark.parametrize(
    "body",
    [
        b"<feed><entry>",
        b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY a "aaaa">]><feed>&a;</feed>',
    ],
)
def test_unparseable_or_dangerous_xml_is_malformed(body: bytes) -> None:
    with pytest.raises(WebhookMalformed):
        YOUTUBE.receive(signed(body), body, SECRETS, now_us=NOW_US)


# -- verification of intent: the connector's topics are its tenant's channels' feeds -----

TOPICS = {topic_for("UCana"), topic_for("UCben")}


def verification(mode: str, channel: str) -> dict[str, str]:
    return {"hub.mode": mode, "hub.topic": topic_for(channel), "hub.challenge": "42"}


def test_a_channel_topic_is_its_uploads_feed() -> None:
    assert topic_for("UCana") == ("https://www.youtube.com/xml/feeds/videos.xml?channel_id=UCana")


def test_only_subscriptions_to_the_connectors_own_topics_are_confirmed() -> None:
    assert intends(verification("subscribe", "UCana"), TOPICS)
    assert not intends(verification("subscribe", "UCsomeone-else"), TOPICS)
    assert not intends(verification("subscribe", "UCana"), set())
    assert not intends({"hub.mode": "subscribe", "hub.challenge": "42"}, TOPICS)


def test_only_unsubscriptions_from_topics_it_no_longer_wants_are_confirmed() -> None:
    assert not intends(verification("unsubscribe", "UCana"), TOPICS)  # a third party's
    assert intends(verification("unsubscribe", "UCgone"), TOPICS)
    assert not intends({"hub.mode": "unsubscribe", "hub.challenge": "42"}, TOPICS)
    assert not intends(verification("denied", "UCgone"), TOPICS)
