"""YouTube (WebSub) and TikTok webhooks over real HTTP: announced videos become
content items of the influencer who owns the channel or account.

Neither push carries counts, so what is checked is the content registry:
``GET /v1/content/{id}`` names the right influencer, once, however often the video
is announced. YouTube answers a bad signature 200 and drops the message, as WebSub
asks; TikTok refuses it, and refuses a signed time more than 5 minutes off.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .support import LiveServer
from .webhooks_support import (
    Webhooks,
    encode,
    grown,
    module_server,
    now_s,
    reason,
    rfc3339_s,
    stamp_of,
    tiktok_signed,
    unique,
    youtube_signed,
)

ATOM = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<feed xmlns:yt="http://www.youtube.com/xml/schemas/2015" '
    'xmlns="http://www.w3.org/2005/Atom" xmlns:at="http://purl.org/atompub/tombstones/1.0">'
    '<link rel="hub" href="https://pubsubhubbub.appspot.com"/>'
    "<title>YouTube video feed</title><updated>{updated}</updated>{entries}</feed>"
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from module_server(tmp_path_factory, "video")


@pytest.fixture
def acme(srv: LiveServer) -> Iterator[Webhooks]:
    with Webhooks(srv, "acme") as tenant:
        yield tenant


# -- YouTube ------------------------------------------------------------------


def entry(video: str | None, channel: str, published: str, title: str = "New video") -> str:
    video_tags = (
        "" if video is None else f"<id>yt:video:{video}</id><yt:videoId>{video}</yt:videoId>"
    )
    href = f"https://www.youtube.com/watch?v={video}"
    return (
        f"<entry>{video_tags}<yt:channelId>{channel}</yt:channelId><title>{title}</title>"
        f'<link rel="alternate" href="{href}"/>'
        f"<author><name>Channel</name></author>"
        f"<published>{published}</published><updated>{published}</updated></entry>"
    )


def feed(*entries: str) -> bytes:
    return ATOM.format(updated=rfc3339_s(10), entries="".join(entries)).encode()


def published_of(published: str) -> str:
    """The registry's spelling of a ``+00:00`` time with whole seconds."""
    return published.replace("+00:00", ".000000Z")


def assert_video(
    acme: Webhooks,
    video: str,
    influencer: str,
    platform: str,
    url: str | None,
    published: str,
) -> dict[str, Any]:
    response = acme.content(video)
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()
    expected = {
        "id": video,
        "platform": platform,
        "influencer_id": influencer,
        "campaign_id": None,
        "url": url,
        "published_at": published,
        "type": "video",
    }
    assert {k: item[k] for k in expected} == expected
    return item


def feed_of(channel: str) -> str:
    return f"https://www.youtube.com/xml/feeds/videos.xml?channel_id={channel}"


def test_youtube_confirms_subscriptions_to_its_channels_by_echoing_the_challenge(
    acme: Webhooks,
) -> None:
    """The connector's topics are the feeds of its tenant's YouTube channels: it confirms
    subscribing to those (in plain text, never sniffed as HTML), unsubscribing from
    others, and nothing else, whichever process the hub calls."""
    channel, other = unique("UC"), unique("UC")
    acme.influencer("youtube", channel)
    connector = acme.connector("youtube")

    def handshake(mode: str, topic: str) -> Any:
        params = {
            "hub.mode": mode,
            "hub.topic": topic,
            "hub.challenge": "8230714501296517441",
            "hub.lease_seconds": "432000",
        }
        return acme.handshake(connector, params)

    for mode, topic in (("subscribe", feed_of(channel)), ("unsubscribe", feed_of(other))):
        answer = handshake(mode, topic)
        assert (answer.status_code, answer.content) == (200, b"8230714501296517441")
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.headers["x-content-type-options"] == "nosniff"
    for mode, topic in (("subscribe", feed_of(other)), ("unsubscribe", feed_of(channel))):
        refused = handshake(mode, topic)
        assert (refused.status_code, refused.content) == (
            404,
            b"no subscription to this topic was asked for",
        )
    for params in ({"hub.mode": "subscribe"}, {"hub.mode": "denied", "hub.challenge": "1"}, {}):
        refused = acme.handshake(connector, params)
        assert refused.status_code == 404


def test_a_signed_youtube_push_registers_the_video_once_for_the_channels_influencer(
    acme: Webhooks,
) -> None:
    channel, video = unique("UC"), unique("-")  # video ids may start with - or _
    influencer = acme.influencer("youtube", channel)
    connector = acme.connector("youtube")
    published = rfc3339_s(120)
    body = feed(entry(video, channel, published))

    answer = acme.deliver(connector, body, youtube_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    url = f"https://www.youtube.com/watch?v={video}"
    first = assert_video(acme, video, influencer, "youtube", url, published_of(published))

    # Redelivered, then announced again after an edit of its title, signed sha256.
    assert (
        acme.deliver(connector, body, youtube_signed(connector.secret(), body)).status_code == 200
    )
    edited = feed(entry(video, channel, published, title="Edited title"))
    signed = youtube_signed(connector.secret(), edited, "sha256")
    assert acme.deliver(connector, edited, signed).status_code == 200
    again = assert_video(acme, video, influencer, "youtube", url, published_of(published))
    assert again["created_at"] == first["created_at"]
    assert [item["id"] for item in acme.content_of(influencer)] == [video]
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (3, 0, 0)
    assert acme.dead_letters(connector) == []


def test_a_badly_signed_youtube_push_is_answered_200_and_dropped(acme: Webhooks) -> None:
    channel, video = unique("UC"), unique("v")
    influencer = acme.influencer("youtube", channel)
    connector = acme.connector("youtube")
    body = feed(entry(video, channel, rfc3339_s()))
    before = acme.telemetry("refused", "youtube")

    for headers in (
        youtube_signed("not-the-hub-secret", body),
        {"X-Hub-Signature": "sha1=" + "0" * 40},
        {"X-Hub-Signature": "md5=" + hashlib.md5(body).hexdigest()},
        {},
        youtube_signed(connector.secret(), body + b" "),  # another body's signature
    ):
        answer = acme.deliver(connector, body, headers)
        assert (answer.status_code, answer.content) == (200, b"")

    assert acme.content(video).status_code == 404
    assert acme.content_of(influencer) == []
    refusals = grown(before, acme.telemetry("refused", "youtube"))
    assert refusals == {"mismatch": 3, "missing": 1, "other": 1}
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (0, 5, 0)
    assert health["last_error"] == "refused: X-Hub-Signature does not match"
    assert acme.dead_letters(connector) == []


def test_a_youtube_push_of_deleted_videos_only_is_not_a_dead_letter(acme: Webhooks) -> None:
    connector = acme.connector("youtube")
    tombstone = f'<at:deleted-entry ref="yt:video:{unique("v")}" when="{rfc3339_s()}"/>'
    body = feed(tombstone)
    answer = acme.deliver(connector, body, youtube_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    assert acme.dead_letters(connector) == []


def test_youtube_entries_without_a_video_id_or_a_known_channel_are_dead_letters(
    acme: Webhooks,
) -> None:
    channel, stranger, video = unique("UC"), unique("UC"), unique("v")
    acme.influencer("youtube", channel)
    connector = acme.connector("youtube")
    published = rfc3339_s()
    broken = entry(None, channel, published)
    body = feed(broken, entry(video, stranger, published))

    answer = acme.deliver(connector, body, youtube_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    (letter,) = acme.dead_letters(connector)
    (no_id, unknown) = letter["reasons"]
    assert no_id.startswith("WebSub entry without a yt:videoId: <")
    assert f"<ns1:channelId>{channel}</ns1:channelId>" in no_id
    assert unknown == (
        f"content {video}: the youtube account '{stranger}' is not registered to an influencer"
    )
    assert acme.content(video).status_code == 404

    # The channel is registered now; the entry without an id still cannot be read.
    owner = acme.influencer("youtube", stranger)
    replay = acme.replayed(letter["id"])
    assert (replay["accepted"], replay["duplicates"]) == (0, 0)
    assert replay["dead_letter"]["state"] == "open"
    assert replay["dead_letter"]["reasons"] == [no_id]
    url = f"https://www.youtube.com/watch?v={video}"
    assert_video(acme, video, owner, "youtube", url, published_of(published))


def test_a_youtube_channel_registered_later_gets_its_video_by_replay(acme: Webhooks) -> None:
    channel, video = unique("UC"), unique("v")
    connector = acme.connector("youtube")
    published = rfc3339_s()
    body = feed(entry(video, channel, published))
    assert (
        acme.deliver(connector, body, youtube_signed(connector.secret(), body)).status_code == 200
    )
    (letter,) = acme.dead_letters(connector, state="open")
    assert letter["reasons"] == [
        f"content {video}: the youtube account '{channel}' is not registered to an influencer"
    ]

    influencer = acme.influencer("youtube", channel)
    for replays in (1, 2):
        replay = acme.replayed(letter["id"])
        assert (replay["accepted"], replay["duplicates"]) == (0, 0)
        state = replay["dead_letter"]
        assert (state["state"], state["replays"], state["reasons"]) == (
            "resolved",
            replays,
            letter["reasons"],
        )
        url = f"https://www.youtube.com/watch?v={video}"
        assert_video(acme, video, influencer, "youtube", url, published_of(published))
        assert [item["id"] for item in acme.content_of(influencer)] == [video]
    assert acme.dead_letters(connector, state="open") == []


# -- TikTok -------------------------------------------------------------------


def tiktok(event: str, openid: str, content: dict[str, Any], created: int | None = None) -> bytes:
    return encode(
        {
            "client_key": "bwo2m45353a6k85",
            "event": event,
            "create_time": now_s() if created is None else created,
            "user_openid": openid,
            "content": encode(content).decode(),  # TikTok sends a JSON string
        }
    )


def test_tiktok_has_no_get_handshake(acme: Webhooks) -> None:
    connector = acme.connector("tiktok")
    answer = acme.handshake(connector, {"challenge": "x"})
    assert (answer.status_code, answer.content) == (405, b"TikTok webhooks have no GET handshake")


def test_a_signed_tiktok_publish_registers_the_video_once(acme: Webhooks) -> None:
    openid, video = unique("act."), unique("73")
    influencer = acme.influencer("tiktok", openid)
    connector = acme.connector("tiktok")
    created = now_s(90)
    public = tiktok(
        "post.publish.publicly_available",
        openid,
        {"publish_id": "v_pub_url~v2.1", "post_id": video},
        created,
    )
    answer = acme.deliver(connector, public, tiktok_signed(connector.secret(), public))
    assert (answer.status_code, answer.content) == (200, b"")
    stamp = stamp_of(created)
    first = assert_video(acme, video, influencer, "tiktok", None, stamp)

    # A redelivery (signed again, at another t) and the same video by Video Kit's event.
    resigned = tiktok_signed(connector.secret(), public, sent_s=now_s(7))
    again = acme.deliver(connector, public, resigned)
    assert again.status_code == 200
    kit = tiktok("video.publish.completed", openid, {"share_id": "s1", "video_id": video}, created)
    assert acme.deliver(connector, kit, tiktok_signed(connector.secret(), kit)).status_code == 200
    assert assert_video(acme, video, influencer, "tiktok", None, stamp) == first
    assert [item["id"] for item in acme.content_of(influencer)] == [video]

    # Known events without a video id register nothing and are no dead letter.
    for event, content in (
        ("video.publish.completed", {"share_id": "video.6974245311675353080.VDCxrcMJ"}),
        ("post.publish.complete", {"publish_id": "v_pub_url~v2.2"}),
        ("video.upload.failed", {"share_id": "s2"}),
    ):
        body = tiktok(event, openid, content)
        answer = acme.deliver(connector, body, tiktok_signed(connector.secret(), body))
        assert (answer.status_code, answer.content) == (200, b"")
    assert [item["id"] for item in acme.content_of(influencer)] == [video]
    assert acme.dead_letters(connector) == []
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (6, 0, 0)


def test_tiktok_refuses_wrong_missing_and_stale_signatures(acme: Webhooks) -> None:
    openid, video = unique("act."), unique("73")
    influencer = acme.influencer("tiktok", openid)
    connector = acme.connector("tiktok")
    body = tiktok("post.publish.publicly_available", openid, {"post_id": video})
    before = acme.telemetry("refused", "tiktok")

    wrong = acme.deliver(connector, body, tiktok_signed("another-client-secret", body))
    assert acme.refused(wrong, 403) == "TikTok-Signature does not match"
    missing = acme.deliver(connector, body, {})
    assert acme.refused(missing, 401) == "missing header TikTok-Signature"
    unsent = acme.deliver(connector, body, {"TikTok-Signature": "s=" + "0" * 64})
    assert acme.refused(unsent, 401) == "TikTok-Signature lacks t=<unix seconds> or s=<signature>"
    old_t = now_s(600)
    stale = acme.deliver(connector, body, tiktok_signed(connector.secret(), body, sent_s=old_t))
    assert re.fullmatch(
        rf"TikTok-Signature is stale \(t={old_t}, 60\d s old; limit 300 s\)",
        acme.refused(stale, 401),
    )
    ahead = now_s(-600)
    future = acme.deliver(connector, body, tiktok_signed(connector.secret(), body, sent_s=ahead))
    assert re.fullmatch(
        rf"TikTok-Signature is stale \(t={ahead}, 59\d s in the future; limit 300 s\)",
        acme.refused(future, 401),
    )

    assert acme.content(video).status_code == 404
    assert acme.content_of(influencer) == []
    refusals = grown(before, acme.telemetry("refused", "tiktok"))
    assert refusals == {"mismatch": 1, "missing": 1, "other": 1, "stale": 2}
    health = acme.health(connector)
    assert (health["deliveries"], health["refused"], health["dead_letters"]) == (0, 5, 0)
    assert acme.dead_letters(connector) == []


def test_tiktok_unknown_events_and_unknown_accounts_are_dead_letters(acme: Webhooks) -> None:
    openid, video = unique("act."), unique("73")
    connector = acme.connector("tiktok")
    unknown = tiktok("comment.created", openid, {"comment_id": "c1", "video_id": video})
    answer = acme.deliver(connector, unknown, tiktok_signed(connector.secret(), unknown))
    assert (answer.status_code, answer.content) == (200, b"")
    public = tiktok("post.publish.publicly_available", openid, {"post_id": video})
    answer = acme.deliver(connector, public, tiktok_signed(connector.secret(), public))
    assert (answer.status_code, answer.content) == (200, b"")

    first, second = acme.dead_letters(connector)
    assert first["reasons"] == [reason("unknown TikTok event 'comment.created'", unknown.decode())]
    assert first["body"] == unknown.decode()
    assert second["reasons"] == [
        f"content {video}: the tiktok account '{openid}' is not registered to an influencer"
    ]
    assert acme.content(video).status_code == 404

    # Replayed minutes later, the signed t is checked against the time of receipt.
    influencer = acme.influencer("tiktok", openid)
    for replays in (1, 2):
        replay = acme.replayed(second["id"])
        assert (replay["dead_letter"]["state"], replay["dead_letter"]["replays"]) == (
            "resolved",
            replays,
        )
        assert [item["id"] for item in acme.content_of(influencer)] == [video]
    assert acme.content(video).json()["influencer_id"] == influencer
    still = acme.replayed(first["id"])["dead_letter"]
    assert (still["state"], still["replays"], still["reasons"]) == ("open", 1, first["reasons"])
    assert [d["id"] for d in acme.dead_letters(connector, state="open")] == [first["id"]]


def test_a_replay_checks_the_signed_time_against_the_time_of_receipt(acme: Webhooks) -> None:
    openid, video = unique("act."), unique("73")
    connector = acme.connector("tiktok")
    body = tiktok("post.publish.publicly_available", openid, {"post_id": video})
    sent = int(time.time()) - 297  # fresh enough when received, stale 5 s later
    signed = tiktok_signed(connector.secret(), body, sent_s=sent)
    assert acme.deliver(connector, body, signed).status_code == 200
    (letter,) = acme.dead_letters(connector)
    influencer = acme.influencer("tiktok", openid)

    time.sleep(max(0.0, sent + 302 - time.time()))
    late = acme.deliver(connector, body, signed)
    assert acme.refused(late, 401).startswith(f"TikTok-Signature is stale (t={sent}, ")
    replay = acme.replayed(letter["id"])
    assert (replay["dead_letter"]["state"], replay["dead_letter"]["replays"]) == ("resolved", 1)
    assert_video(
        acme, video, influencer, "tiktok", None, stamp_of(int(json.loads(body)["create_time"]))
    )


def test_tiktok_authorization_removed_disables_the_connector(acme: Webhooks) -> None:
    openid = unique("act.")
    connector = acme.connector("tiktok")
    body = tiktok("authorization.removed", openid, {"reason": 1})
    answer = acme.deliver(connector, body, tiktok_signed(connector.secret(), body))
    assert (answer.status_code, answer.content) == (200, b"")
    (shown,) = [c for c in acme.connectors() if c["id"] == connector.id]
    assert shown["disabled"] == (
        f"TikTok authorization.removed for {openid}: reason 1 (user disconnected the app)"
    )


def test_a_replayed_tiktok_request_is_answered_and_dropped(acme: Webhooks) -> None:
    """The same signed request again (same t, same s) within the window is a replay:
    answered 200, processed once (one dead letter, not two)."""
    openid, video = unique("act."), unique("73")
    connector = acme.connector("tiktok")
    body = tiktok("post.publish.publicly_available", openid, {"post_id": video})
    signed = tiktok_signed(connector.secret(), body)
    before = acme.telemetry("deliveries", "tiktok")
    answers = [acme.deliver(connector, body, signed) for _ in range(3)]
    assert [(a.status_code, a.content) for a in answers] == [(200, b"")] * 3
    assert len(acme.dead_letters(connector)) == 1
    assert grown(before, acme.telemetry("deliveries", "tiktok")) == {
        "dead_letter": 1,
        "replay": 2,
    }
    # TikTok's own retry is signed anew: processed (and recognised by the registry).
    acme.influencer("tiktok", openid)
    again = acme.deliver(connector, body, tiktok_signed(connector.secret(), body, sent_s=now_s(1)))
    assert again.status_code == 200
    assert acme.content(video).status_code == 200


def test_a_disabled_tiktok_connector_refuses_deliveries(acme: Webhooks) -> None:
    openid, video = unique("act."), unique("73")
    acme.influencer("tiktok", openid)
    connector = acme.connector("tiktok")
    removed = tiktok("authorization.removed", openid, {"reason": 2})
    assert (
        acme.deliver(connector, removed, tiktok_signed(connector.secret(), removed)).status_code
        == 200
    )
    body = tiktok("post.publish.publicly_available", openid, {"post_id": video})
    answer = acme.deliver(connector, body, tiktok_signed(connector.secret(), body))
    assert answer.status_code == 410, answer.text
    assert answer.json()["error"]["code"] == "gone"
    assert acme.content(video).status_code == 404
