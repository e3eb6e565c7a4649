"""TikTok webhooks: TikTok-Signature (t, s) with a freshness window, and event mapping."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from hypemeter.connectors.webhooks import ADAPTERS, NewContent, WebhookRefused

FIXTURES = Path(__file__).parent / "fixtures"
PUBLISHED = (FIXTURES / "tiktok_webhook_video_publish_completed.json").read_bytes()
SECRETS = {"client_secret": "test-client-secret"}
NOW_S = 1_795_183_200  # 2026-11-20T14:00:00Z
NOW_US = NOW_S * 1_000_000
TIKTOK = ADAPTERS["tiktok"]
OPEN_ID = "act.example12345Example12345Example"


def signed(
    body: bytes, *, t: int = NOW_S, secret: str = SECRETS["client_secret"]
) -> dict[str, str]:
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"tiktok-signature": f"t={t},s={digest}"}


def event(name: str, content: dict[str, object]) -> bytes:
    envelope = {
        "client_key": "bwo2m45353a6k85",
        "event": name,
        "create_time": 1795183100,
        "user_openid": OPEN_ID,
        "content": json.dumps(content),
    }
    return json.dumps(envelope).encode()


def test_there_is_no_get_handshake() -> None:
    assert TIKTOK.answer_get({}, SECRETS, now_us=NOW_US).status == 405


def test_publicly_available_announces_the_video_by_post_id() -> None:
    body = event(
        "post.publish.publicly_available",
        {"publish_id": "v_pub_url~v2.1", "post_id": "7080213458555737986"},
    )
    receipt = TIKTOK.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 200
    assert receipt.content == (
        NewContent(
            content_id="7080213458555737986",
            account_id=OPEN_ID,
            url=None,
            published_us=1_795_183_100_000_000,
            type="video",
        ),
    )
    again = TIKTOK.receive(signed(body), body, SECRETS, now_us=NOW_US + 1_000_000)
    assert again.content == receipt.content


def test_publish_completed_without_a_video_id_is_acknowledged_and_ignored() -> None:
    receipt = TIKTOK.receive(signed(PUBLISHED), PUBLISHED, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 200
    assert receipt.content == () and receipt.events == () and receipt.unmapped == ()
    assert receipt.ignored is not None
    assert "video.publish.completed carries no video id" in receipt.ignored
    assert "v_pub_url~v2.123456789" in receipt.ignored


def test_publish_completed_with_a_video_id_announces_it() -> None:
    body = event("video.publish.completed", {"share_id": "video.1.x", "video_id": "7080"})
    receipt = TIKTOK.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [c.content_id for c in receipt.content] == ["7080"]


def test_authorization_removed_disables_the_connector() -> None:
    body = event("authorization.removed", {"reason": 1})
    receipt = TIKTOK.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 200
    assert receipt.disable == (
        f"TikTok authorization.removed for {OPEN_ID}: reason 1 (user disconnected the app)"
    )


@pytest.mark.parametrize(
    "name", ["video.upload.failed", "portability.download.ready", "post.publish.failed"]
)
def test_known_events_without_engagement_record_nothing(name: str) -> None:
    body = event(name, {"share_id": "video.6974245311675353080.VDCxrcMJ"})
    receipt = TIKTOK.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert receipt.reply.status == 200
    assert (receipt.events, receipt.content, receipt.unmapped) == ((), (), ())
    assert receipt.disable is None and receipt.ignored is None


def test_an_unknown_event_goes_to_dead_letters() -> None:
    body = event("comment.update", {"comment_id": "1"})
    receipt = TIKTOK.receive(signed(body), body, SECRETS, now_us=NOW_US)
    assert [u.reason for u in receipt.unmapped] == ["unknown TikTok event 'comment.update'"]
    assert receipt.unmapped[0].payload == body.decode()


def test_wrong_missing_and_malformed_signatures_are_refused() -> None:
    with pytest.raises(WebhookRefused) as wrong:
        TIKTOK.receive(signed(PUBLISHED, secret="other"), PUBLISHED, SECRETS, now_us=NOW_US)
    assert (wrong.value.status, wrong.value.reason) == (403, "TikTok-Signature does not match")
    with pytest.raises(WebhookRefused) as missing:
        TIKTOK.receive({}, PUBLISHED, SECRETS, now_us=NOW_US)
    assert (missing.value.status, missing.value.reason) == (401, "missing header TikTok-Signature")
    with pytest.raises(WebhookRefused) as malformed:
        TIKTOK.receive({"tiktok-signature": "s=abc"}, PUBLISHED, SECRETS, now_us=NOW_US)
    assert malformed.value.status == 401
    moved = signed(PUBLISHED)
    moved_t = moved["tiktok-signature"].replace(f"t={NOW_S}", f"t={NOW_S - 1}")
    with pytest.raises(WebhookRefused) as retimed:
        TIKTOK.receive({"tiktok-signature": moved_t}, PUBLISHED, SECRETS, now_us=NOW_US)
    assert retimed.value.status == 403


def test_a_stale_timestamp_is_refused_even_when_correctly_signed() -> None:
    sent = NOW_S - 412
    with pytest.raises(WebhookRefused) as stale:
        TIKTOK.receive(signed(PUBLISHED, t=sent), PUBLISHED, SECRETS, now_us=NOW_US)
    assert stale.value.status == 401
    assert stale.value.reason == f"TikTok-Signature is stale (t={sent}, 412 s old; limit 300 s)"
    within = TIKTOK.receive(signed(PUBLISHED, t=NOW_S - 300), PUBLISHED, SECRETS, now_us=NOW_US)
    assert within.reply.status == 200
    with pytest.raises(WebhookRefused, match="in the future"):
        TIKTOK.receive(signed(PUBLISHED, t=NOW_S + 301), PUBLISHED, SECRETS, now_us=NOW_US)


def test_the_signed_timestamp_and_digest_name_the_delivery() -> None:
    body = event("video.upload.failed", {"publish_id": "p1"})
    headers = signed(body)
    receipt = TIKTOK.receive(headers, body, SECRETS, now_us=NOW_US)
    digest = headers["tiktok-signature"].split("s=")[1]
    assert receipt.message_id == f"tiktok:{NOW_S}:{digest}"
    later = TIKTOK.receive(signed(body, t=NOW_S + 1), body, SECRETS, now_us=NOW_US)
    assert later.message_id is not None and later.message_id != receipt.message_id
